# Turns the numbered migration files into a C table compiled into keeld, so
# the binary carries its schema and cannot run against a half-copied one.
# Invoked as: cmake -DOUT=file.c -DSYM=name -DFILES="a.sql;b.sql" -P embed.cmake
set(body "")
set(count 0)
foreach(f ${FILES})
  get_filename_component(name ${f} NAME)
  string(REGEX MATCH "^[0-9]+" num ${name})
  file(READ ${f} sql)
  string(REPLACE "\\" "\\\\" sql "${sql}")
  string(REPLACE "\"" "\\\"" sql "${sql}")
  string(REPLACE "\n" "\\n\"\n  \"" sql "${sql}")
  math(EXPR num "${num} + 0")
  string(APPEND body "  {${num}, \"${name}\",\n  \"${sql}\"},\n")
  math(EXPR count "${count} + 1")
endforeach()
file(WRITE ${OUT} "/* generated from store/migrations: do not edit */\n#include \"store/migrations.h\"\nconst k_migration_t ${SYM}[] = {\n${body}};\nconst int ${SYM}_count = ${count};\n")
