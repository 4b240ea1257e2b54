"""A test-only app whose ``tools`` module the server under test autodiscovers."""
