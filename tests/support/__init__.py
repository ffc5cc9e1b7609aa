"""Helpers the test modules share (no test module imports another): the collector bundle's
files, event scenarios, the example apps, the logging-pipeline harness, the store's tables."""
