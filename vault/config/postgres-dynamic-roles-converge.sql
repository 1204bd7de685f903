-- Bring roles made by an older postgres-dynamic-roles.sql to what it creates now; harmless on
-- a current cluster (psql variable admin_role, e.g. -v admin_role=vault_db_admin). Issue 23:
-- the backend's logins (members of flask_app) must have no way to SET ROLE to the table
-- owner, and Vault's admin role must be able to make migration logins and end sessions.
REVOKE flask_owner FROM flask_app;
GRANT flask_owner TO :"admin_role" WITH ADMIN OPTION;
GRANT pg_signal_backend TO :"admin_role";
