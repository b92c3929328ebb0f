"""The native API of SEED-API.md."""
