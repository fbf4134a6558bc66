"""The OCI distribution protocol: client, authentication, credentials."""
