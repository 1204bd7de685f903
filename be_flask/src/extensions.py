"""The Flask extensions of the app, created unbound here and bound in create_app."""

from __future__ import annotations

from src.auth import AppJWTManager
from src.database import Database
from src.passwords import Passwords

db = Database()
jwt = AppJWTManager()
passwords = Passwords()

__all__ = ["db", "jwt", "passwords"]
