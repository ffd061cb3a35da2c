/*
 * smartbroker benchmark load generator (AMQP 0-9-1, on rabbitmq-c).
 *
 * One connection per publisher thread and per consumer thread.  Publishers
 * encode basic.publish frames themselves and write them in batches, so the
 * generator stays cheap next to the broker under test.  Consumers decode with
 * rabbitmq-c and send acks in batches when their socket runs dry.
 *
 * Each message body starts with the CLOCK_MONOTONIC send time in ns (8 bytes,
 * host byte order); consumers put now - sent into a log-linear histogram.
 * The result is one JSON object on stdout.  Run with --help for the options.
 */
#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

enum xkind { X_DEFAULT, X_FANOUT, X_DIRECT, X_TOPIC };

static struct {
    char url[512];
    char host[256], user[128], pass[128], vhost[128];
    int port;
    char qprefix[128];
    int queues, pubs, cons, size;
    double duration, rate;
    long count;
    int persistent, durable, confirm, prefetch, auto_ack, multi_ack;
    long max_backlog;
    int coalesce_us;
    char exchange[128];
    enum xkind xkind;
    int bindings;
    int batch;
    double drain_timeout, idle_timeout;
    char broker_pids[256];
    char label[64];
    int keep, delete_only;
    int stream; /* a --queue-arg x-queue-type=stream: every consumer reads every message */
} opt;

/* --queue-arg / --consumer-arg KEY=VALUE: an integer becomes a long ('l'), true/false a
 * boolean, anything else a string, as stream arguments need (x-stream-offset=first). */
#define MAX_ARGS 16
typedef struct {
    int n;
    amqp_table_entry_t e[MAX_ARGS];
} arg_table_t;
static arg_table_t g_qargs, g_cargs;

static void add_arg(arg_table_t *t, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || t->n >= MAX_ARGS) {
        fprintf(stderr, "loadgen: bad or too many KEY=VALUE arguments: %s\n", kv);
        exit(2);
    }
    amqp_table_entry_t *e = &t->e[t->n++];
    e->key = amqp_cstring_bytes(strndup(kv, (size_t)(eq - kv)));
    const char *v = eq + 1;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (*v && end && !*end) {
        e->value.kind = AMQP_FIELD_KIND_I64;
        e->value.value.i64 = n;
    } else if (!strcmp(v, "true") || !strcmp(v, "false")) {
        e->value.kind = AMQP_FIELD_KIND_BOOLEAN;
        e->value.value.boolean = v[0] == 't';
    } else {
        e->value.kind = AMQP_FIELD_KIND_UTF8;
        e->value.value.bytes = amqp_cstring_bytes(strdup(v));
    }
    if (t == &g_qargs && !strncmp(kv, "x-queue-type=stream", 20))
        opt.stream = 1;
}

static amqp_table_t arg_table(arg_table_t *t)
{
    amqp_table_t table = {.num_entries = t->n, .entries = t->e};
    return table;
}

static const char *xkind_name(enum xkind k)
{
    switch (k) {
    case X_FANOUT: return "fanout";
    case X_DIRECT: return "direct";
    case X_TOPIC: return "topic";
    default: return "";
    }
}

/* ------------------------------------------------------------------ helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_us(long us)
{
    sleep_until_ns(now_ns() + (uint64_t)us * 1000ull);
}

static atomic_int g_failed;
static char g_error[512];
static pthread_mutex_t g_error_lock = PTHREAD_MUTEX_INITIALIZER;

/* Record the first error; threads notice g_failed and wind down. */
static void fail(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&g_error_lock);
    if (!g_error[0]) {
        va_start(ap, fmt);
        vsnprintf(g_error, sizeof g_error, fmt, ap);
        va_end(ap);
        fprintf(stderr, "loadgen: %s\n", g_error);
    }
    pthread_mutex_unlock(&g_error_lock);
    atomic_store(&g_failed, 1);
}

static int rpc_ok(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fail("%s: channel closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fail("%s: connection closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            fail("%s: unexpected server method 0x%08x", what, r.reply.id);
        }
    } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        fail("%s: %s", what, amqp_error_string2(r.library_error));
    } else {
        fail("%s: no reply", what);
    }
    return 0;
}

static amqp_connection_state_t open_conn(const char *what)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s) {
        fail("%s: cannot create socket", what);
        amqp_destroy_connection(c);
        return NULL;
    }
    int rc = amqp_socket_open(s, opt.host, opt.port);
    if (rc != AMQP_STATUS_OK) {
        fail("%s: connect %s:%d: %s", what, opt.host, opt.port, amqp_error_string2(rc));
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_rpc_reply_t r = amqp_login(c, opt.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                    opt.user, opt.pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fail("%s: login failed (reply type %d)", what, r.reply_type);
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_channel_open(c, 1);
    if (!rpc_ok(c, what)) {
        amqp_destroy_connection(c);
        return NULL;
    }
    return c;
}

static void close_conn(amqp_connection_state_t c)
{
    if (!c)
        return;
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* Write everything; the library keeps its sockets non-blocking. */
static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
                return -1;
            if (atomic_load(&g_failed))
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- histogram */

/* Values below 128 get their own bucket; above that each power of two is split
 * into 64 linear sub-buckets, so a bucket is at most 1/64 (1.6 %) wide. */
#define HBUCKETS (60 * 64)

typedef struct {
    uint64_t b[HBUCKETS];
    uint64_t n, max;
    double sum;
} hist_t;

static int hist_index(uint64_t v)
{
    if (v < 128)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    return (shift + 1) * 64 + (int)(v >> shift) - 64;
}

static uint64_t hist_mid(int i)
{
    if (i < 128)
        return (uint64_t)i;
    int shift = i / 64 - 1;
    uint64_t lo = ((uint64_t)(i % 64 + 64)) << shift;
    return lo + ((1ull << shift) >> 1);
}

static void hist_add(hist_t *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(hist_t *into, const hist_t *h)
{
    for (int i = 0; i < HBUCKETS; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

static double hist_pct(const hist_t *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_mid(i);
            return (double)(v > h->max ? h->max : v);
        }
    }
    return (double)h->max;
}

/* ------------------------------------------------------------ routing plan */

/* A "target" is one routing destination: a queue (default/direct exchange),
 * one topic binding, or the single fanout route. */
static int n_targets(void)
{
    if (opt.xkind == X_FANOUT)
        return 1;
    if (opt.xkind == X_TOPIC)
        return opt.bindings;
    return opt.queues;
}

static void queue_name(int q, char *buf, size_t n)
{
    if (opt.queues == 1)
        snprintf(buf, n, "%s", opt.qprefix);
    else
        snprintf(buf, n, "%s-%d", opt.qprefix, q);
}

/* Topic binding b goes to queue b % Q; odd bindings use a '*' wildcard.
 * Routing key "<prefix>.<b>.x" matches exactly binding b. */
static void topic_binding_key(int b, char *buf, size_t n)
{
    snprintf(buf, n, "%s.%d.%s", opt.qprefix, b, (b & 1) ? "*" : "x");
}

static void target_routing_key(int t, char *buf, size_t n)
{
    if (opt.xkind == X_FANOUT)
        buf[0] = 0;
    else if (opt.xkind == X_TOPIC)
        snprintf(buf, n, "%s.%d.x", opt.qprefix, t);
    else
        queue_name(t, buf, n);
}

/* Deliveries expected per publish. A stream delivers every message to each of its
 * consumers (consumer j reads queue j % Q), a queue to one of them. */
static int copies_per_publish(void)
{
    if (opt.stream) {
        int per_queue = opt.cons / opt.queues > 0 ? opt.cons / opt.queues : 1;
        return opt.xkind == X_FANOUT ? opt.queues * per_queue : per_queue;
    }
    return opt.xkind == X_FANOUT ? opt.queues : 1;
}

/* Worker i of n gets {i mod T} when T <= n, else every T-index congruent to i. */
static int assign(int i, int n, int total, int **out)
{
    int cnt = 0;
    if (total <= n) {
        *out = malloc(sizeof(int));
        (*out)[0] = i % total;
        return 1;
    }
    *out = malloc(sizeof(int) * (size_t)(total / n + 1));
    for (int t = i; t < total; t += n)
        (*out)[cnt++] = t;
    return cnt;
}

/* ------------------------------------------------------------ shared state */

static atomic_long g_published;  /* messages written to sockets */
static atomic_long g_delivered;  /* deliveries fully received */
static atomic_int g_ready;       /* workers connected and set up */
static atomic_int g_go;          /* start signal */
static atomic_int g_stop_pub;    /* publishers: stop now (timeouts) */
static atomic_int g_stop;        /* consumers: stop now */
static atomic_int g_pubs_done;
static uint64_t g_t0, g_deadline;

/* -------------------------------------------------------------- publishers */

typedef struct {
    int id;
    pthread_t th;
    long sent, confirmed, nacked;
    uint64_t t_sent_end, t_confirm_end;
    hist_t *clat;
} pub_t;

static void put16(uint8_t **p, uint16_t v) { (*p)[0] = v >> 8; (*p)[1] = v & 255; *p += 2; }
static void put32(uint8_t **p, uint32_t v) { put16(p, v >> 16); put16(p, v & 0xffff); }
static void put64(uint8_t **p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p, (uint32_t)v); }
static void putstr(uint8_t **p, const char *s)
{
    size_t n = strlen(s);
    **p = (uint8_t)n;
    memcpy(*p + 1, s, n);
    *p += 1 + n;
}

/* Start a frame at p, returning where the payload size goes. */
static uint8_t *frame_begin(uint8_t **p, uint8_t type)
{
    **p = type;
    (*p)++;
    put16(p, 1);
    uint8_t *sz = *p;
    *p += 4;
    return sz;
}

static void frame_end(uint8_t **p, uint8_t *sz)
{
    uint32_t n = (uint32_t)(*p - sz - 4);
    uint8_t *q = sz;
    put32(&q, n);
    **p = AMQP_FRAME_END;
    (*p)++;
}

static const uint8_t *g_filler;

/* Encode basic.publish + content header + body frame(s); return bytes used. */
static size_t encode_publish(uint8_t *buf, const char *rkey, int body_max)
{
    uint8_t *p = buf, *sz;
    sz = frame_begin(&p, AMQP_FRAME_METHOD);
    put16(&p, 60);
    put16(&p, 40);
    put16(&p, 0);
    putstr(&p, opt.exchange);
    putstr(&p, rkey);
    *p++ = 0;
    frame_end(&p, sz);

    sz = frame_begin(&p, AMQP_FRAME_HEADER);
    put16(&p, 60);
    put16(&p, 0);
    put64(&p, (uint64_t)opt.size);
    put16(&p, 0x1000); /* delivery-mode present */
    *p++ = opt.persistent ? 2 : 1;
    frame_end(&p, sz);

    int left = opt.size, first = 1;
    while (left > 0) {
        int chunk = left < body_max ? left : body_max;
        sz = frame_begin(&p, AMQP_FRAME_BODY);
        memcpy(p, g_filler, (size_t)chunk);
        if (first && chunk >= 8) {
            uint64_t t = now_ns();
            memcpy(p, &t, 8);
        }
        p += chunk;
        frame_end(&p, sz);
        left -= chunk;
        first = 0;
    }
    return (size_t)(p - buf);
}

/* Drain whatever the broker sent to a publisher (confirms, errors). */
static int pub_read(amqp_connection_state_t c, pub_t *me, uint64_t *sent_at, long ring,
                    int wait_ms)
{
    struct timeval zero = {0, 0};
    int got = 0;
    for (;;) {
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(c, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT) {
            if (got || wait_ms <= 0)
                break;
            struct pollfd pfd = {.fd = amqp_get_sockfd(c), .events = POLLIN};
            if (poll(&pfd, 1, wait_ms) <= 0)
                break;
            wait_ms = 0;
            continue;
        }
        if (rc != AMQP_STATUS_OK) {
            fail("publisher %d: read: %s", me->id, amqp_error_string2(rc));
            return -1;
        }
        got++;
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        amqp_method_number_t id = f.payload.method.id;
        if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
            uint64_t tag, from;
            int multiple;
            if (id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                tag = a->delivery_tag;
                multiple = a->multiple;
            } else {
                amqp_basic_nack_t *a = f.payload.method.decoded;
                tag = a->delivery_tag;
                multiple = a->multiple;
            }
            from = multiple ? (uint64_t)me->confirmed + (uint64_t)me->nacked + 1 : tag;
            uint64_t now = now_ns();
            for (uint64_t t = from; t <= tag; t++) {
                hist_add(me->clat, now - sent_at[t % (uint64_t)ring]);
                if (id == AMQP_BASIC_ACK_METHOD)
                    me->confirmed++;
                else
                    me->nacked++;
            }
            me->t_confirm_end = now;
        } else if (id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = f.payload.method.decoded;
            fail("publisher %d: channel closed by broker: %u %.*s", me->id, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
            return -1;
        } else if (id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = f.payload.method.decoded;
            fail("publisher %d: connection closed by broker: %u %.*s", me->id, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
            return -1;
        }
    }
    amqp_maybe_release_buffers(c);
    return got;
}

static void *publisher(void *arg)
{
    pub_t *me = arg;
    char name[32];
    snprintf(name, sizeof name, "publisher %d", me->id);
    amqp_connection_state_t c = open_conn(name);
    if (!c)
        return NULL;
    if (opt.confirm) {
        amqp_confirm_select(c, 1);
        if (!rpc_ok(c, "confirm.select")) {
            amqp_destroy_connection(c);
            return NULL;
        }
    }
    int *targets;
    int nt = assign(me->id, opt.pubs, n_targets(), &targets);
    char (*keys)[160] = malloc(sizeof(*keys) * (size_t)nt);
    for (int i = 0; i < nt; i++)
        target_routing_key(targets[i], keys[i], sizeof keys[i]);

    int fd = amqp_get_sockfd(c);
    int body_max = amqp_get_frame_max(c) - 8;
    size_t msg_max = 512 + (size_t)opt.size + 8 * ((size_t)opt.size / (size_t)body_max + 1);
    size_t cap = (size_t)opt.batch + msg_max;
    uint8_t *buf = malloc(cap);
    long ring = 65536;
    while (ring < 2L * opt.confirm)
        ring *= 2;
    uint64_t *sent_at = opt.confirm ? calloc((size_t)ring, sizeof(uint64_t)) : NULL;
    int copies = copies_per_publish();
    double my_rate = opt.rate > 0 ? opt.rate / opt.pubs : 0;

    atomic_fetch_add(&g_ready, 1);
    while (!atomic_load(&g_go))
        sleep_us(200);

    uint64_t t0 = g_t0;
    int ti = 0;
    uint64_t last_read = t0;
    for (;;) {
        if (atomic_load(&g_failed) || atomic_load(&g_stop_pub))
            break;
        uint64_t now = now_ns();
        if (opt.count ? me->sent >= opt.count : now >= g_deadline)
            break;
        /* How many messages may go out right now, and what limits us? */
        long allowed = opt.count ? opt.count - me->sent : LONG_MAX;
        enum { FREE, BY_RATE, BY_BACKLOG, BY_WINDOW } why = FREE;
        uint64_t wake = 0;
        if (my_rate > 0) {
            long due = (long)((double)(now - t0) * 1e-9 * my_rate) + 1 - me->sent;
            if (due < allowed) {
                allowed = due;
                why = BY_RATE;
                wake = t0 + (uint64_t)((double)me->sent / my_rate * 1e9);
            }
        }
        if (opt.max_backlog > 0) {
            long owed = atomic_load_explicit(&g_published, memory_order_relaxed) * copies -
                        atomic_load_explicit(&g_delivered, memory_order_relaxed);
            long room = (opt.max_backlog - owed) / copies;
            if (room < allowed) {
                allowed = room;
                why = BY_BACKLOG;
            }
        }
        if (opt.confirm) {
            long room = opt.confirm - (me->sent - me->confirmed - me->nacked);
            if (room < allowed) {
                allowed = room;
                why = BY_WINDOW;
            }
        }
        /* Encode what is allowed (up to one batch) and write it in one go.  At a
         * fixed rate this is normally a single message, sent the moment it is due. */
        if (allowed > 0) {
            size_t len = 0;
            long n = 0;
            do {
                if (opt.confirm)
                    sent_at[(uint64_t)(me->sent + n + 1) % (uint64_t)ring] = now_ns();
                len += encode_publish(buf + len, keys[ti], body_max);
                if (++ti == nt)
                    ti = 0;
                n++;
            } while (n < allowed && len < (size_t)opt.batch);
            if (send_all(fd, buf, len) < 0) {
                if (!atomic_load(&g_failed))
                    fail("publisher %d: send: %s", me->id, strerror(errno));
                break;
            }
            atomic_fetch_add_explicit(&g_published, n, memory_order_relaxed);
            me->sent += n;
        }
        /* Read confirms and errors: block briefly when the window is full,
         * otherwise peek now and then so a channel.close is noticed. */
        now = now_ns();
        if (opt.confirm || now - last_read > 50000000ull) {
            if (pub_read(c, me, sent_at, ring, allowed <= 0 && why == BY_WINDOW ? 5 : 0) < 0)
                break;
            last_read = now;
        }
        if (allowed <= 0 && why == BY_RATE)
            sleep_until_ns(wake < g_deadline || opt.count ? wake : g_deadline);
        else if (allowed <= 0 && why == BY_BACKLOG)
            sleep_us(300); /* let the consumers catch up */
    }
    me->t_sent_end = now_ns();
    if (!me->t_confirm_end)
        me->t_confirm_end = me->t_sent_end;
    atomic_fetch_add(&g_pubs_done, 1);
    /* Wait for outstanding confirms. */
    uint64_t limit = me->t_sent_end + (uint64_t)(opt.drain_timeout * 1e9);
    while (opt.confirm && me->confirmed + me->nacked < me->sent && !atomic_load(&g_failed) &&
           now_ns() < limit && !atomic_load(&g_stop))
        if (pub_read(c, me, sent_at, ring, 20) < 0)
            break;
    if (!atomic_load(&g_failed))
        close_conn(c);
    else
        amqp_destroy_connection(c);
    free(buf);
    free(keys);
    free(targets);
    free(sent_at);
    return NULL;
}

/* --------------------------------------------------------------- consumers */

typedef struct {
    int id;
    pthread_t th;
    long got;
    uint64_t t_last;
    hist_t *lat;
} con_t;

static size_t encode_ack(uint8_t *p0, uint64_t tag, int multiple)
{
    uint8_t *p = p0, *sz = frame_begin(&p, AMQP_FRAME_METHOD);
    put16(&p, 60);
    put16(&p, 80);
    put64(&p, tag);
    *p++ = multiple ? 1 : 0;
    frame_end(&p, sz);
    return (size_t)(p - p0);
}

static void *consumer(void *arg)
{
    con_t *me = arg;
    char name[32];
    snprintf(name, sizeof name, "consumer %d", me->id);
    long local = 0;
    amqp_connection_state_t c = open_conn(name);
    if (!c)
        return NULL;
    if (opt.prefetch > 0) {
        amqp_basic_qos(c, 1, 0, (uint16_t)opt.prefetch, 0);
        if (!rpc_ok(c, "basic.qos"))
            goto out;
    }
    int *qs;
    int nq = assign(me->id, opt.cons, opt.queues, &qs);
    for (int i = 0; i < nq; i++) {
        char qn[160];
        queue_name(qs[i], qn, sizeof qn);
        amqp_basic_consume(c, 1, amqp_cstring_bytes(qn), amqp_empty_bytes, 0, opt.auto_ack, 0,
                           arg_table(&g_cargs));
        if (!rpc_ok(c, "basic.consume"))
            break;
    }
    free(qs);
    if (atomic_load(&g_failed))
        goto out;
    atomic_fetch_add(&g_ready, 1);

    int fd = amqp_get_sockfd(c);
    int ack_every = opt.multi_ack > 1 ? opt.multi_ack : 1;
    int flush_at = opt.prefetch > 0 ? opt.prefetch / 4 : 64; /* acks per write, at most */
    if (flush_at < 1)
        flush_at = 1;
    if (flush_at > 256)
        flush_at = 256;
    uint8_t acks[256 * 21 + 32];
    size_t alen = 0;
    int nacks = 0, since_multi = 0;
    uint64_t last_tag = 0, body_left = 0;
    int in_msg = 0, first_body = 0;
    struct timeval zero = {0, 0};

    while (!atomic_load(&g_stop) && !atomic_load(&g_failed)) {
        long got = 0;
        for (;;) {
            amqp_frame_t f;
            int rc = amqp_simple_wait_frame_noblock(c, &f, &zero);
            if (rc == AMQP_STATUS_TIMEOUT)
                break;
            if (rc != AMQP_STATUS_OK) {
                fail("consumer %d: read: %s", me->id, amqp_error_string2(rc));
                goto out;
            }
            int complete = 0;
            if (f.frame_type == AMQP_FRAME_METHOD) {
                amqp_method_number_t id = f.payload.method.id;
                if (id == AMQP_BASIC_DELIVER_METHOD) {
                    amqp_basic_deliver_t *d = f.payload.method.decoded;
                    last_tag = d->delivery_tag;
                    in_msg = 1;
                } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD ||
                           id == AMQP_BASIC_CANCEL_METHOD) {
                    fail("consumer %d: broker sent %s", me->id, amqp_method_name(id));
                    goto out;
                }
            } else if (f.frame_type == AMQP_FRAME_HEADER && in_msg) {
                body_left = f.payload.properties.body_size;
                first_body = 1;
                if (body_left == 0)
                    complete = 1;
            } else if (f.frame_type == AMQP_FRAME_BODY && in_msg) {
                amqp_bytes_t b = f.payload.body_fragment;
                if (first_body && b.len >= 8) {
                    uint64_t sent;
                    memcpy(&sent, b.bytes, 8);
                    uint64_t now = now_ns();
                    if (now >= sent)
                        hist_add(me->lat, now - sent);
                }
                first_body = 0;
                body_left -= b.len < body_left ? b.len : body_left;
                if (body_left == 0)
                    complete = 1;
            }
            if (!complete)
                continue;
            in_msg = 0;
            got++;
            if (!opt.auto_ack) {
                if (ack_every > 1) {
                    if (++since_multi >= ack_every) {
                        alen += encode_ack(acks + alen, last_tag, 1);
                        nacks++;
                        since_multi = 0;
                    }
                } else {
                    alen += encode_ack(acks + alen, last_tag, 0);
                    nacks++;
                }
                if (nacks >= flush_at) {
                    if (send_all(fd, acks, alen) < 0)
                        goto send_failed;
                    alen = 0;
                    nacks = 0;
                }
            }
            if (got >= 256) {
                atomic_fetch_add_explicit(&g_delivered, got, memory_order_relaxed);
                local += got;
                got = 0;
            }
        }
        /* Socket is dry: send the acks we owe, including a partial multi-ack. */
        if (since_multi && !opt.auto_ack) {
            alen += encode_ack(acks + alen, last_tag, 1);
            since_multi = 0;
        }
        if (alen) {
            if (send_all(fd, acks, alen) < 0)
                goto send_failed;
            alen = 0;
            nacks = 0;
        }
        if (got) {
            atomic_fetch_add_explicit(&g_delivered, got, memory_order_relaxed);
            local += got;
            me->t_last = now_ns();
        }
        amqp_maybe_release_buffers(c);
        if (got && opt.coalesce_us > 0)
            sleep_us(opt.coalesce_us);
        else if (!amqp_data_in_buffer(c) && !amqp_frames_enqueued(c)) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            poll(&pfd, 1, 20);
        }
    }
    me->got = local;
    close_conn(c);
    return NULL;
send_failed:
    if (!atomic_load(&g_failed))
        fail("consumer %d: send: %s", me->id, strerror(errno));
out:
    me->got = local;
    amqp_destroy_connection(c);
    return NULL;
}

/* -------------------------------------------------------------- CPU usage */

static double proc_cpu_s(void)
{
    if (!opt.broker_pids[0] || !strcmp(opt.broker_pids, "none"))
        return -1;
    double total = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", opt.broker_pids);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char path[64], line[2048];
        snprintf(path, sizeof path, "/proc/%s/stat", tok);
        FILE *f = fopen(path, "r");
        if (!f)
            return -1;
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = 0;
        char *p = strrchr(line, ')');
        if (!p)
            return -1;
        unsigned long ut = 0, st = 0;
        /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            return -1;
        total += (double)(ut + st);
    }
    return total / (double)sysconf(_SC_CLK_TCK);
}

typedef struct {
    double busy, steal; /* seconds, all CPUs */
} sys_cpu_t;

static sys_cpu_t sys_cpu(void)
{
    sys_cpu_t r = {0, 0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return r;
    unsigned long long u, ni, sy, id, io, irq, sirq, st;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io, &irq,
               &sirq, &st) == 8) {
        double hz = (double)sysconf(_SC_CLK_TCK);
        r.busy = (double)(u + ni + sy + irq + sirq) / hz;
        r.steal = (double)st / hz;
    }
    fclose(f);
    return r;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* ------------------------------------------------------------ setup/teardown */

static int setup_topology(amqp_connection_state_t c)
{
    if (opt.exchange[0]) {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes(opt.exchange),
                              amqp_cstring_bytes(xkind_name(opt.xkind)), 0, opt.durable, 0, 0,
                              amqp_empty_table);
        if (!rpc_ok(c, "exchange.declare"))
            return 0;
    }
    for (int q = 0; q < opt.queues; q++) {
        char qn[160];
        queue_name(q, qn, sizeof qn);
        if (opt.stream) { /* a stream cannot be purged: start from an empty one */
            amqp_queue_delete(c, 1, amqp_cstring_bytes(qn), 0, 0);
            if (!rpc_ok(c, "queue.delete"))
                return 0;
        }
        amqp_queue_declare(c, 1, amqp_cstring_bytes(qn), 0, opt.durable, 0, 0,
                           arg_table(&g_qargs));
        if (!rpc_ok(c, "queue.declare"))
            return 0;
        if (!opt.stream) {
            amqp_queue_purge(c, 1, amqp_cstring_bytes(qn));
            if (!rpc_ok(c, "queue.purge"))
                return 0;
        }
        if (opt.xkind == X_FANOUT || opt.xkind == X_DIRECT) {
            amqp_queue_bind(c, 1, amqp_cstring_bytes(qn), amqp_cstring_bytes(opt.exchange),
                            amqp_cstring_bytes(opt.xkind == X_DIRECT ? qn : ""),
                            amqp_empty_table);
            if (!rpc_ok(c, "queue.bind"))
                return 0;
        }
    }
    for (int b = 0; opt.xkind == X_TOPIC && b < opt.bindings; b++) {
        char qn[160], key[160];
        queue_name(b % opt.queues, qn, sizeof qn);
        topic_binding_key(b, key, sizeof key);
        amqp_queue_bind(c, 1, amqp_cstring_bytes(qn), amqp_cstring_bytes(opt.exchange),
                        amqp_cstring_bytes(key), amqp_empty_table);
        if (!rpc_ok(c, "queue.bind"))
            return 0;
    }
    return 1;
}

static void teardown(void)
{
    atomic_store(&g_failed, 0); /* clean up even after a failed run */
    amqp_connection_state_t c = open_conn("cleanup");
    if (!c)
        return;
    for (int q = 0; q < opt.queues; q++) {
        char qn[160];
        queue_name(q, qn, sizeof qn);
        amqp_queue_delete(c, 1, amqp_cstring_bytes(qn), 0, 0);
        if (!rpc_ok(c, "queue.delete")) {
            amqp_destroy_connection(c);
            return;
        }
    }
    if (opt.exchange[0]) {
        amqp_exchange_delete(c, 1, amqp_cstring_bytes(opt.exchange), 0);
        if (!rpc_ok(c, "exchange.delete")) {
            amqp_destroy_connection(c);
            return;
        }
    }
    close_conn(c);
}

/* ------------------------------------------------------------------ output */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_hist(const char *name, const hist_t *h)
{
    printf("\"%s\": {\"count\": %" PRIu64 ", \"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
           "\"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}",
           name, h->n, h->n ? h->sum / (double)h->n / 1e3 : 0.0, hist_pct(h, 0.50) / 1e3,
           hist_pct(h, 0.90) / 1e3, hist_pct(h, 0.99) / 1e3, hist_pct(h, 0.999) / 1e3,
           (double)h->max / 1e3);
}

static void server_prop(amqp_connection_state_t c, const char *key, char *out, size_t n)
{
    out[0] = 0;
    amqp_table_t *t = amqp_get_server_properties(c);
    for (int i = 0; t && i < t->num_entries; i++) {
        amqp_table_entry_t *e = &t->entries[i];
        if ((int)e->key.len == (int)strlen(key) && !memcmp(e->key.bytes, key, e->key.len) &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            snprintf(out, n, "%.*s", (int)e->value.value.bytes.len,
                     (char *)e->value.value.bytes.bytes);
        }
    }
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *o)
{
    fprintf(o,
        "usage: loadgen [options]\n"
        "  --url URL             amqp://user:pass@host:port/vhost [amqp://guest:guest@localhost:5672/]\n"
        "  --queue NAME          queue name; with --queues K>1 the queues are NAME-0..NAME-K-1 [lg]\n"
        "  --queues K            number of queues [1]\n"
        "  -p, --publishers N    publisher threads, one connection each [1]\n"
        "  -c, --consumers M     consumer threads, one connection each [1]\n"
        "  -s, --size BYTES      body size; the first 8 bytes carry the send time [16]\n"
        "  -d, --duration SEC    publishing time [5]\n"
        "  -n, --count N         publish N messages per publisher instead of -d\n"
        "  -r, --rate R          total publish rate in msg/s, 0 = as fast as allowed [0]\n"
        "  --persistent          delivery-mode 2 (default 1)\n"
        "  --durable             durable queues and exchange\n"
        "  --queue-arg K=V       queue.declare argument, repeatable (x-queue-type=stream);\n"
        "                        a stream is deleted and declared afresh, not purged\n"
        "  --consumer-arg K=V    basic.consume argument, repeatable (x-stream-offset=first)\n"
        "  --confirm W           publisher confirms with at most W unconfirmed messages\n"
        "  --prefetch P          basic.qos prefetch-count per consumer, 0 = unlimited [0]\n"
        "  --auto-ack            consume with no-ack (default: manual ack of every message)\n"
        "  --multi-ack N         ack with multiple=true every N messages (and when idle)\n"
        "  --max-backlog B       publishers pause while more than B deliveries are\n"
        "                        outstanding (closed loop); 0 = open loop [0]\n"
        "  --coalesce-us US      consumer sleeps US after draining its socket [0]\n"
        "  --exchange NAME       publish through this exchange instead of the default one\n"
        "  --exchange-type T     fanout (all queues bound) | direct (key = queue name) |\n"
        "                        topic (--bindings keys spread over the queues) [fanout]\n"
        "  --bindings B          topic bindings to create, each message matches one [=queues]\n"
        "  --batch BYTES         publisher write size at max rate [65536]\n"
        "  --drain-timeout SEC   max wait for deliveries after publishing ends [20]\n"
        "  --idle-timeout SEC    give up draining after SEC without a delivery [5]\n"
        "  --broker-pid P[,P]    broker process(es) for CPU accounting ('none') [none]\n"
        "  --label NAME          copied into the JSON\n"
        "  --keep                do not delete queues/exchange at the end\n"
        "  --delete-only         only delete the queues/exchange these options name\n"
        "Prints one JSON object on stdout.  Exit status: 0 ok, 2 error, 3 incomplete.\n");
}

static void parse_args(int argc, char **argv)
{
    snprintf(opt.url, sizeof opt.url, "amqp://guest:guest@localhost:5672/");
    snprintf(opt.qprefix, sizeof opt.qprefix, "lg");
    opt.queues = opt.pubs = opt.cons = 1;
    opt.size = 16;
    opt.duration = 5;
    opt.multi_ack = 1;
    opt.batch = 65536;
    opt.drain_timeout = 20;
    opt.idle_timeout = 5;
    opt.xkind = X_DEFAULT;
    const char *xtype = "fanout";
    enum {
        O_URL = 256, O_QUEUE, O_QUEUES, O_PERS, O_DUR, O_CONF, O_PREF, O_AUTO, O_MULTI, O_BACK,
        O_COAL, O_EX, O_EXT, O_BIND, O_BATCH, O_DRAIN, O_IDLE, O_PID, O_LABEL, O_KEEP, O_DEL,
        O_QARG, O_CARG
    };
    static const struct option lo[] = {
        {"url", 1, 0, O_URL}, {"queue", 1, 0, O_QUEUE}, {"queues", 1, 0, O_QUEUES},
        {"publishers", 1, 0, 'p'}, {"consumers", 1, 0, 'c'}, {"size", 1, 0, 's'},
        {"duration", 1, 0, 'd'}, {"count", 1, 0, 'n'}, {"rate", 1, 0, 'r'},
        {"persistent", 0, 0, O_PERS}, {"durable", 0, 0, O_DUR}, {"confirm", 1, 0, O_CONF},
        {"prefetch", 1, 0, O_PREF}, {"auto-ack", 0, 0, O_AUTO}, {"multi-ack", 1, 0, O_MULTI},
        {"max-backlog", 1, 0, O_BACK}, {"coalesce-us", 1, 0, O_COAL}, {"exchange", 1, 0, O_EX},
        {"exchange-type", 1, 0, O_EXT}, {"bindings", 1, 0, O_BIND}, {"batch", 1, 0, O_BATCH},
        {"drain-timeout", 1, 0, O_DRAIN}, {"idle-timeout", 1, 0, O_IDLE},
        {"broker-pid", 1, 0, O_PID}, {"label", 1, 0, O_LABEL}, {"keep", 0, 0, O_KEEP},
        {"delete-only", 0, 0, O_DEL}, {"queue-arg", 1, 0, O_QARG},
        {"consumer-arg", 1, 0, O_CARG}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "p:c:s:d:n:r:h", lo, NULL)) != -1) {
        switch (ch) {
        case O_URL: snprintf(opt.url, sizeof opt.url, "%s", optarg); break;
        case O_QUEUE: snprintf(opt.qprefix, sizeof opt.qprefix, "%s", optarg); break;
        case O_QUEUES: opt.queues = atoi(optarg); break;
        case 'p': opt.pubs = atoi(optarg); break;
        case 'c': opt.cons = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.count = atol(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case O_PERS: opt.persistent = 1; break;
        case O_DUR: opt.durable = 1; break;
        case O_CONF: opt.confirm = atoi(optarg); break;
        case O_PREF: opt.prefetch = atoi(optarg); break;
        case O_AUTO: opt.auto_ack = 1; break;
        case O_MULTI: opt.multi_ack = atoi(optarg); break;
        case O_BACK: opt.max_backlog = atol(optarg); break;
        case O_COAL: opt.coalesce_us = atoi(optarg); break;
        case O_EX: snprintf(opt.exchange, sizeof opt.exchange, "%s", optarg); break;
        case O_EXT: xtype = optarg; break;
        case O_BIND: opt.bindings = atoi(optarg); break;
        case O_BATCH: opt.batch = atoi(optarg); break;
        case O_DRAIN: opt.drain_timeout = atof(optarg); break;
        case O_IDLE: opt.idle_timeout = atof(optarg); break;
        case O_PID: snprintf(opt.broker_pids, sizeof opt.broker_pids, "%s", optarg); break;
        case O_LABEL: snprintf(opt.label, sizeof opt.label, "%s", optarg); break;
        case O_KEEP: opt.keep = 1; break;
        case O_DEL: opt.delete_only = 1; break;
        case O_QARG: add_arg(&g_qargs, optarg); break;
        case O_CARG: add_arg(&g_cargs, optarg); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (opt.exchange[0]) {
        if (!strcmp(xtype, "fanout")) opt.xkind = X_FANOUT;
        else if (!strcmp(xtype, "direct")) opt.xkind = X_DIRECT;
        else if (!strcmp(xtype, "topic")) opt.xkind = X_TOPIC;
        else { fprintf(stderr, "loadgen: unknown exchange type %s\n", xtype); exit(2); }
    }
    if (opt.bindings <= 0)
        opt.bindings = opt.queues;
    if (opt.queues < 1 || opt.pubs < 0 || opt.cons < 1 || opt.size < 0 || opt.multi_ack < 1 ||
        opt.batch < 0 || opt.confirm < 0 || opt.prefetch < 0 || opt.prefetch > 65535) {
        fprintf(stderr, "loadgen: bad arguments\n");
        exit(2);
    }
    if (opt.pubs > 0 && n_targets() < 1) {
        fprintf(stderr, "loadgen: nothing to publish to\n");
        exit(2);
    }
    struct amqp_connection_info ci;
    char urlcopy[512];
    snprintf(urlcopy, sizeof urlcopy, "%s", opt.url);
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(urlcopy, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "loadgen: cannot parse URL %s\n", opt.url);
        exit(2);
    }
    if (ci.ssl) {
        fprintf(stderr, "loadgen: amqps:// is not supported\n");
        exit(2);
    }
    snprintf(opt.host, sizeof opt.host, "%s", ci.host);
    snprintf(opt.user, sizeof opt.user, "%s", ci.user);
    snprintf(opt.pass, sizeof opt.pass, "%s", ci.password);
    snprintf(opt.vhost, sizeof opt.vhost, "%s", ci.vhost && ci.vhost[0] ? ci.vhost : "/");
    opt.port = ci.port;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    if (opt.delete_only) {
        teardown();
        return atomic_load(&g_failed) ? 2 : 0;
    }

    amqp_connection_state_t ctl = open_conn("setup");
    if (!ctl)
        return 2;
    char product[128], version[64];
    server_prop(ctl, "product", product, sizeof product);
    server_prop(ctl, "version", version, sizeof version);
    uint64_t ts_setup = now_ns();
    if (!setup_topology(ctl)) {
        amqp_destroy_connection(ctl);
        teardown();
        return 2;
    }
    double setup_s = (double)(now_ns() - ts_setup) * 1e-9;
    close_conn(ctl);

    uint8_t *filler = malloc((size_t)opt.size + 8);
    for (int i = 0; i < opt.size + 8; i++)
        filler[i] = (uint8_t)('a' + i % 26);
    g_filler = filler;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    con_t *cons = calloc((size_t)opt.cons, sizeof(con_t));
    pub_t *pubs = calloc((size_t)(opt.pubs ? opt.pubs : 1), sizeof(pub_t));
    for (int j = 0; j < opt.cons; j++) {
        cons[j].id = j;
        cons[j].lat = calloc(1, sizeof(hist_t));
        pthread_create(&cons[j].th, &attr, consumer, &cons[j]);
    }
    while (atomic_load(&g_ready) < opt.cons && !atomic_load(&g_failed))
        sleep_us(1000);
    if (atomic_load(&g_failed))
        opt.pubs = 0; /* a consumer failed: start no publishers */
    for (int i = 0; i < opt.pubs; i++) {
        pubs[i].id = i;
        pubs[i].clat = calloc(1, sizeof(hist_t));
        pthread_create(&pubs[i].th, &attr, publisher, &pubs[i]);
    }
    while (atomic_load(&g_ready) < opt.cons + opt.pubs && !atomic_load(&g_failed))
        sleep_us(1000);
    if (atomic_load(&g_failed)) {
        atomic_store(&g_go, 1);
        atomic_store(&g_stop, 1);
        for (int i = 0; i < opt.pubs; i++)
            pthread_join(pubs[i].th, NULL);
        for (int j = 0; j < opt.cons; j++)
            pthread_join(cons[j].th, NULL);
        if (!opt.keep)
            teardown();
        printf("{\"label\": ");
        json_str(opt.label);
        printf(", \"error\": ");
        json_str(g_error);
        printf("}\n");
        return 2;
    }

    /* Measurement window starts here. */
    double b0 = proc_cpu_s(), l0 = self_cpu_s();
    sys_cpu_t s0 = sys_cpu();
    g_t0 = now_ns();
    g_deadline = g_t0 + (uint64_t)(opt.duration * 1e9);
    atomic_store(&g_go, 1);

    long deliv_window = -1;
    uint64_t t_window = 0;
    while (!atomic_load(&g_failed) && atomic_load(&g_pubs_done) < opt.pubs) {
        uint64_t now = now_ns();
        if (!opt.count && deliv_window < 0 && now >= g_deadline) {
            deliv_window = atomic_load(&g_delivered);
            t_window = now;
        }
        sleep_us(now < g_deadline && !opt.count ? 2000 : 500);
    }
    uint64_t t_pub_end = now_ns();
    if (deliv_window < 0) {
        deliv_window = atomic_load(&g_delivered);
        t_window = t_pub_end;
    }

    /* Drain: wait for every expected delivery (or time out). */
    int incomplete = 0;
    long last = -1;
    uint64_t t_progress = now_ns();
    long expected = 0;
    for (;;) {
        expected = atomic_load(&g_published) * copies_per_publish();
        long d = atomic_load(&g_delivered);
        uint64_t now = now_ns();
        if (atomic_load(&g_failed))
            break;
        if (d >= expected && atomic_load(&g_pubs_done) >= opt.pubs) {
            int confirming = 0;
            for (int i = 0; i < opt.pubs; i++)
                if (opt.confirm && pubs[i].confirmed + pubs[i].nacked < pubs[i].sent)
                    confirming = 1;
            if (!confirming)
                break;
        }
        if (d != last) {
            last = d;
            t_progress = now;
        }
        if ((double)(now - t_progress) * 1e-9 > opt.idle_timeout ||
            (double)(now - t_pub_end) * 1e-9 > opt.drain_timeout) {
            incomplete = 1;
            break;
        }
        sleep_us(500);
    }
    uint64_t t_done = now_ns();
    double b1 = proc_cpu_s(), l1 = self_cpu_s();
    sys_cpu_t s1 = sys_cpu();

    atomic_store(&g_stop_pub, 1);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < opt.pubs; i++)
        pthread_join(pubs[i].th, NULL);
    for (int j = 0; j < opt.cons; j++)
        pthread_join(cons[j].th, NULL);
    int failed = atomic_load(&g_failed);
    if (!opt.keep)
        teardown();

    hist_t *lat = calloc(1, sizeof(hist_t)), *clat = calloc(1, sizeof(hist_t));
    long sent = 0, confirmed = 0, nacked = 0, delivered = atomic_load(&g_delivered);
    uint64_t t_sent_end = g_t0, t_conf_end = g_t0, t_last_deliv = g_t0;
    for (int i = 0; i < opt.pubs; i++) {
        sent += pubs[i].sent;
        confirmed += pubs[i].confirmed;
        nacked += pubs[i].nacked;
        if (pubs[i].t_sent_end > t_sent_end)
            t_sent_end = pubs[i].t_sent_end;
        if (pubs[i].t_confirm_end > t_conf_end)
            t_conf_end = pubs[i].t_confirm_end;
        hist_merge(clat, pubs[i].clat);
    }
    for (int j = 0; j < opt.cons; j++) {
        hist_merge(lat, cons[j].lat);
        if (cons[j].t_last > t_last_deliv)
            t_last_deliv = cons[j].t_last;
    }
    double pub_time = (double)((opt.confirm ? t_conf_end : t_sent_end) - g_t0) * 1e-9;
    double window = (double)(t_window - g_t0) * 1e-9;
    double wall = (double)(t_done - g_t0) * 1e-9;
    double bcpu = (b0 >= 0 && b1 >= 0) ? b1 - b0 : -1;
    double lcpu = l1 - l0;
    double busy = s1.busy - s0.busy, steal = s1.steal - s0.steal;

    printf("{\"label\": ");
    json_str(opt.label);
    printf(", \"server\": {\"product\": ");
    json_str(product);
    printf(", \"version\": ");
    json_str(version);
    printf("}, \"config\": {\"url_host\": ");
    json_str(opt.host);
    printf(", \"port\": %d, \"queues\": %d, \"publishers\": %d, \"consumers\": %d, \"size\": %d, "
           "\"duration\": %g, \"count\": %ld, \"rate\": %g, \"persistent\": %s, \"durable\": %s, "
           "\"confirm\": %d, \"prefetch\": %d, \"auto_ack\": %s, \"multi_ack\": %d, "
           "\"max_backlog\": %ld, \"coalesce_us\": %d, \"exchange\": ",
           opt.port, opt.queues, opt.pubs, opt.cons, opt.size, opt.duration, opt.count, opt.rate,
           opt.persistent ? "true" : "false", opt.durable ? "true" : "false", opt.confirm,
           opt.prefetch, opt.auto_ack ? "true" : "false", opt.multi_ack, opt.max_backlog,
           opt.coalesce_us);
    json_str(opt.exchange);
    printf(", \"exchange_type\": \"%s\", \"bindings\": %d, \"batch\": %d},\n", xkind_name(opt.xkind),
           opt.xkind == X_TOPIC ? opt.bindings : 0, opt.batch);
    printf(" \"setup_s\": %.3f, \"published\": %ld, \"confirmed\": %ld, \"nacked\": %ld, "
           "\"expected\": %ld, \"delivered\": %ld, \"incomplete\": %s, \"error\": ",
           setup_s, sent, confirmed, nacked, expected, delivered, incomplete ? "true" : "false");
    if (failed)
        json_str(g_error);
    else
        printf("null");
    printf(",\n \"pub_time_s\": %.3f, \"wall_s\": %.3f, \"pub_rate\": %.1f, \"deliv_rate\": %.1f, "
           "\"deliv_rate_total\": %.1f,\n ",
           pub_time, wall, pub_time > 0 ? (double)sent / pub_time : 0.0,
           window > 0 ? (double)deliv_window / window : 0.0,
           t_last_deliv > g_t0 ? (double)delivered / ((double)(t_last_deliv - g_t0) * 1e-9) : 0.0);
    json_hist("latency_us", lat);
    printf(",\n ");
    json_hist("confirm_latency_us", clat);
    printf(",\n \"broker_pids\": ");
    json_str(opt.broker_pids);
    if (bcpu >= 0)
        printf(", \"broker_cpu_s\": %.3f, \"broker_cpu_pct\": %.1f, \"deliv_per_broker_cpu_s\": %.1f",
               bcpu, 100 * bcpu / wall, bcpu > 0 ? (double)delivered / bcpu : 0.0);
    else
        printf(", \"broker_cpu_s\": null, \"broker_cpu_pct\": null, \"deliv_per_broker_cpu_s\": null");
    printf(", \"loadgen_cpu_s\": %.3f, \"loadgen_cpu_pct\": %.1f, \"machine_busy_pct\": %.1f, "
           "\"steal_pct\": %.1f, \"other_cpu_pct\": ",
           lcpu, 100 * lcpu / wall, 100 * busy / wall, 100 * steal / wall);
    if (bcpu >= 0)
        printf("%.1f", 100 * (busy - bcpu - lcpu) / wall);
    else
        printf("null");
    printf(", \"ncpu\": %ld}\n", sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    return failed ? 2 : incomplete ? 3 : 0;
}
