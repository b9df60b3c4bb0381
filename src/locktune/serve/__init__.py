"""The web page and JSON API over a model and an image index (`locktune serve`)."""
