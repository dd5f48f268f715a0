"""Exception hierarchy; messages follow the Go errors of containers/storage."""
