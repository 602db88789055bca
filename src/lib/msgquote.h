/* msgquote.h — libkeel-internal: quoting user text into one-line error
 * messages, the same way in every parser (selectors, templates). */
#ifndef KEEL_LIB_MSGQUOTE_H
#define KEEL_LIB_MSGQUOTE_H

#include <stddef.h>

/* Writes p[0..n) for a message: printable ASCII as is, other bytes (and
 * backslash) as \xNN, at most 40 source bytes then "...". */
void k_msg_quote(char out[200], const char *p, size_t n);
/* Names byte c for a message: "character '@'" or "byte 0x00". */
void k_msg_name_char(char out[24], unsigned char c);

#endif
