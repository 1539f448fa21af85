"""Test helpers: real files, a fake hub and a fake OpenAI server, and a CLI runner."""
