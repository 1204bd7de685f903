-- Roles for VAULT_DB_MODE=dynamic, run once by the database superuser in the app database.
-- psql variables: admin_role, admin_password, database (e.g. psql -v admin_role=vault_db_admin).
-- flask_owner owns the tables; only migration logins (Vault role flask-migrate, read by the
-- operator, never by the backend) are its members, and they SET ROLE to it. flask_app holds
-- only the table privileges the backend uses and is what the backend's short-lived logins
-- (Vault role flask-app) are members of: no path from them to the owner. The admin role is
-- Vault's own; Vault rotates its password at once.
CREATE ROLE flask_owner NOLOGIN;
CREATE ROLE flask_app NOLOGIN;
-- CREATEROLE creates and drops the logins; ADMIN OPTION on the two group roles lets it make
-- them members (required from PostgreSQL 16 on); pg_signal_backend lets a revocation end the
-- sessions of the login it drops.
CREATE ROLE :"admin_role" LOGIN CREATEROLE PASSWORD :'admin_password';
GRANT flask_app TO :"admin_role" WITH ADMIN OPTION;
GRANT flask_owner TO :"admin_role" WITH ADMIN OPTION;
GRANT pg_signal_backend TO :"admin_role";
GRANT CONNECT, CREATE ON DATABASE :"database" TO flask_owner;
GRANT CONNECT ON DATABASE :"database" TO flask_app;
GRANT USAGE, CREATE ON SCHEMA public TO flask_owner;
GRANT USAGE ON SCHEMA public TO flask_app;
ALTER DEFAULT PRIVILEGES FOR ROLE flask_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flask_app;
ALTER DEFAULT PRIVILEGES FOR ROLE flask_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO flask_app;
