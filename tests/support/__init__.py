"""Helpers the tests share: tiny models, the MongoDB-wire fixture, fleet services, CLI runners, corpus files."""
