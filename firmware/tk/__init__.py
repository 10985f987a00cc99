# thingkit device package. See tk/main.py for the entry point.
