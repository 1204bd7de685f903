-- Roles for VAULT_DB_MODE=dynamic, run once by the database superuser in the app database.
-- psql variables: admin_role, admin_password, database (e.g. psql -v admin_role=vault_db_admin).
-- flask_owner owns the tables (migrations SET ROLE to it); flask_app holds only privileges
-- and is what Vault's short-lived logins are members of; the admin role is Vault's own.
CREATE ROLE flask_owner NOLOGIN;
-- NOINHERIT: logins get flask_app's privileges, but the owner's only after SET ROLE.
CREATE ROLE flask_app NOLOGIN NOINHERIT;
GRANT flask_owner TO flask_app;
CREATE ROLE :"admin_role" LOGIN CREATEROLE PASSWORD :'admin_password';
GRANT flask_app TO :"admin_role" WITH ADMIN OPTION;
GRANT CONNECT, CREATE ON DATABASE :"database" TO flask_owner;
GRANT CONNECT ON DATABASE :"database" TO flask_app;
GRANT USAGE, CREATE ON SCHEMA public TO flask_owner;
GRANT USAGE ON SCHEMA public TO flask_app;
ALTER DEFAULT PRIVILEGES FOR ROLE flask_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flask_app;
ALTER DEFAULT PRIVILEGES FOR ROLE flask_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO flask_app;
