"""Project secrets: stored encrypted, write-only through the API, handed to the project's runs."""
