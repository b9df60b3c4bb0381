"""Write the version-2 drop lists of the clean Tux Paint benchmarks (eval/benchmarks/clean.py, `make_lists`)
to src/locktune/assets/clean_drop_lists.json: hashes every training image twice (~5 min on 2 cores)."""

import json

from locktune.eval.benchmarks import clean

if __name__ == "__main__":
    lists = clean.make_lists()
    clean.LISTS_FILE.write_text(json.dumps(lists, indent=1) + "\n")
    for name, entry in lists["benchmarks"].items():
        why = {}
        for row in entry["dropped"]:
            why[row["why"]] = why.get(row["why"], 0) + 1
        print(f"{name}: {len(entry['dropped'])} of {entry['images']} dropped {why}")
