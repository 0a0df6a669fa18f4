"""The hub-managed dataaccess service."""
