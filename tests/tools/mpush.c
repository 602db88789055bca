/* mpush — pushes metric batches to keeld as an enrolled agent and prints
 * which ones keeld acknowledged, for the durability test (a kill -9 of
 * keeld mid-stream must lose no acknowledged sample).
 *
 *   mpush URL AGENT_STATE_DIR COUNT INTERVAL_MS
 *
 * Each push is one sample of keel_test_seq{stream="mpush"} at the current
 * time with value i.  stdout: "acked T_MS" per 200 answer, "failed T_MS
 * WHY" otherwise; exit 0 when at least one push was acknowledged. */
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/agentproto.h"
#include "keel/buf.h"
#include "keel/metricbatch.h"
#include "keel/time.h"

static size_t sink(char *p, size_t sz, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return sz * n;
}

static int load_identity(const char *dir, char *agent_id, size_t idlen, uint8_t sk[KEEL_AGENT_SK_BYTES]) {
  char path[1024];
  json_t *o;
  const char *id, *hex;
  size_t bin = 0;
  int rc = -1;
  snprintf(path, sizeof path, "%s/identity.json", dir);
  if (!(o = json_load_file(path, 0, NULL))) return -1;
  id = json_string_value(json_object_get(o, "agent_id"));
  hex = json_string_value(json_object_get(o, "secret_key"));
  if (id && hex && !sodium_hex2bin(sk, KEEL_AGENT_SK_BYTES, hex, strlen(hex), NULL, &bin, NULL) &&
      bin == KEEL_AGENT_SK_BYTES) {
    snprintf(agent_id, idlen, "%s", id);
    rc = 0;
  }
  json_decref(o);
  return rc;
}

int main(int argc, char **argv) {
  char agent_id[64], url[1024];
  uint8_t sk[KEEL_AGENT_SK_BYTES];
  keel_mb_label_t labels[] = {{"__name__", "keel_test_seq"}, {"stream", "mpush"}};
  keel_mb_enc_t enc;
  keel_buf_t body, auth;
  int count, interval, acked = 0;
  CURL *c;

  if (argc != 5) {
    fprintf(stderr, "usage: mpush URL AGENT_STATE_DIR COUNT INTERVAL_MS\n");
    return 2;
  }
  count = atoi(argv[3]);
  interval = atoi(argv[4]);
  if (sodium_init() < 0 || load_identity(argv[2], agent_id, sizeof agent_id, sk)) {
    fprintf(stderr, "mpush: cannot read %s/identity.json\n", argv[2]);
    return 2;
  }
  snprintf(url, sizeof url, "%s/v1/agent/metrics", argv[1]);
  curl_global_init(CURL_GLOBAL_ALL);
  c = curl_easy_init();
  keel_mb_enc_init(&enc, 0);
  keel_buf_init(&body, KEEL_MB_MAX_BATCH);
  keel_buf_init(&auth, 4096);
  for (int i = 0; i < count; i++) {
    int64_t t = keel_now_ms();
    keel_err_t e = {0};
    struct curl_slist *h = NULL;
    long status = 0;
    CURLcode cc;
    char hdr[4200];
    keel_mb_enc_reset(&enc);
    keel_buf_reset(&body);
    if (keel_mb_enc_add1(&enc, labels, 2, t, (double)i, &e) || keel_mb_enc_finish(&enc, &body, &e) ||
        keel_agent_sign_request(&auth, agent_id, sk, "POST", "/v1/agent/metrics", t, body.data,
                                body.len)) {
      fprintf(stderr, "mpush: %s\n", e.msg);
      return 1;
    }
    snprintf(hdr, sizeof hdr, "Authorization: %s", auth.data);
    h = curl_slist_append(h, hdr);
    h = curl_slist_append(h, "Content-Type: " KEEL_MB_CONTENT_TYPE);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body.len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    cc = curl_easy_perform(c);
    if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
      printf("acked %lld\n", (long long)t);
      acked++;
    } else {
      printf("failed %lld %s\n", (long long)t, cc != CURLE_OK ? curl_easy_strerror(cc) : "HTTP status");
    }
    fflush(stdout);
    curl_slist_free_all(h);
    {
      struct timespec ts = {interval / 1000, (long)(interval % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  curl_easy_cleanup(c);
  keel_mb_enc_free(&enc);
  keel_buf_free(&body);
  keel_buf_free(&auth);
  return acked ? 0 : 1;
}
