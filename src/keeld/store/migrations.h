/* Numbered schema migrations, generated at build time from
 * store/migrations/<backend>/NNNN_name.sql.  Applied in order at start;
 * each backend records what it applied.  Files MUST NOT change once
 * released: add a new number instead. */
#ifndef KEELD_STORE_MIGRATIONS_H
#define KEELD_STORE_MIGRATIONS_H

typedef struct k_migration {
  int version;
  const char *name;
  const char *sql;
} k_migration_t;

extern const k_migration_t k_sqlite_migrations[];
extern const int k_sqlite_migrations_count;

#endif
