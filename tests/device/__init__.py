# A package, so these test modules' names (test_config, ...) cannot clash with tests/host.
