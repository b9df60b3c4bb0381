from locktune.cli import main

raise SystemExit(main())
