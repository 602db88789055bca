/* msgquote.c — see msgquote.h. */
#include "msgquote.h"

#include <stdio.h>
#include <string.h>

void k_msg_quote(char out[200], const char *p, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n && i < 40; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') out[o++] = (char)c;
    else o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
  }
  if (n > 40) memcpy(out + o, "...", 3), o += 3;
  out[o] = '\0';
}

void k_msg_name_char(char out[24], unsigned char c) {
  if (c >= 0x20 && c < 0x7f) snprintf(out, 24, "character '%c'", c);
  else snprintf(out, 24, "byte 0x%02x", c);
}
