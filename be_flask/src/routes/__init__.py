"""HTTP routes by feature: health, auth, users, admin."""
