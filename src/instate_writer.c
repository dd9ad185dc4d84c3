/*
 * instate_writer.c - batches of record writes, and the writer: a thread
 * that commits batches in the order they were submitted (instate.h,
 * "Batches and the background writer"; docs/DESIGN.md "The writer").
 *
 * A batch owns all its bytes (keys and values copied into one buffer), so
 * the writer's thread never reads memory of the submitter's. The queue is
 * a list threaded through the batches themselves: submitting allocates
 * nothing and cannot fail for want of memory.
 */
#include "instate_store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===================================================================== */
/* Batches                                                                */

typedef struct batch_op {
	instate_ns *ns;
	size_t koff, klen, voff, vlen;  /* in the batch's data buffer */
	instate_meta meta;
	unsigned flags;
	int del;
} batch_op;

struct instate_batch {
	instate_buf ops;        /* batch_op[n] */
	instate_buf data;       /* keys and values */
	size_t n;
	uint64_t ticket;        /* set by instate_writer_submit() */
	instate_batch *next;    /* in the writer's queue */
};

#define PUT_FLAGS (INSTATE_NOOVERWRITE | INSTATE_KEEPEXPIRY | INSTATE_IFCHANGED)

int instate_batch_new(instate_batch **out)
{
	instate_batch *b = calloc(1, sizeof *b);

	*out = b;
	return b ? 0 : ENOMEM;
}

void instate_batch_free(instate_batch *b)
{
	if (!b)
		return;
	instate_buf_free(&b->ops);
	instate_buf_free(&b->data);
	free(b);
}

void instate_batch_clear(instate_batch *b)
{
	b->ops.len = b->data.len = 0;
	b->n = 0;
}

void instate_batch_truncate(instate_batch *b, size_t count)
{
	const batch_op *ops = (const batch_op *)(const void *)b->ops.data;

	if (count >= b->n)
		return;
	b->n = count;
	b->ops.len = count * sizeof *ops;
	b->data.len = count ? ops[count - 1].voff + ops[count - 1].vlen : 0;
}

size_t instate_batch_count(const instate_batch *b)
{
	return b->n;
}

static int batch_add(instate_batch *b, instate_ns *ns, const void *key, size_t klen,
                     const void *val, size_t vlen, const instate_meta *meta, unsigned flags,
                     int del)
{
	batch_op *op;

	if (!ns || !key || klen < 1 || klen > INSTATE_KEY_MAX || (flags & ~PUT_FLAGS) ||
	    (vlen && !val) || vlen > SIZE_MAX - klen)
		return INSTATE_INVALID;
	/* Both reservations before anything changes: an ENOMEM leaves the
	 * batch as it was. */
	if (instate_buf_reserve(&b->ops, sizeof *op) || instate_buf_reserve(&b->data, klen + vlen))
		return ENOMEM;
	op = (batch_op *)(void *)b->ops.data + b->n;
	op->ns = ns;
	op->koff = b->data.len;
	op->klen = klen;
	memcpy(b->data.data + b->data.len, key, klen);
	b->data.len += klen;
	op->voff = b->data.len;
	op->vlen = vlen;
	if (vlen)
		memcpy(b->data.data + b->data.len, val, vlen);
	b->data.len += vlen;
	if (meta) {
		op->meta = *meta;
	} else {
		op->meta.expires_ms = 0;
		op->meta.version = 0;
	}
	op->flags = flags;
	op->del = del;
	b->n++;
	b->ops.len += sizeof *op;
	return 0;
}

int instate_batch_put(instate_batch *b, instate_ns *ns, const void *key, size_t klen,
                      const void *val, size_t vlen, const instate_meta *meta, unsigned flags)
{
	return batch_add(b, ns, key, klen, val, vlen, meta, flags, 0);
}

int instate_batch_del(instate_batch *b, instate_ns *ns, const void *key, size_t klen)
{
	return batch_add(b, ns, key, klen, NULL, 0, NULL, 0, 1);
}

int instate_batch_apply(const instate_batch *b, instate_txn *txn, size_t *written,
                        size_t *failed)
{
	const batch_op *ops = (const batch_op *)(const void *)b->ops.data;
	size_t i, w = 0;

	for (i = 0; i < b->n; i++) {
		const batch_op *op = &ops[i];
		const char *key = b->data.data + op->koff;
		int rc;

		if (op->del)
			rc = instate_del(txn, op->ns, key, op->klen);
		else
			rc = instate_put(txn, op->ns, key, op->klen, b->data.data + op->voff, op->vlen,
				&op->meta, op->flags);
		if (rc == 0) {
			w++;
		} else if (!(rc == INSTATE_EXISTS || (op->del && rc == INSTATE_NOTFOUND))) {
			if (written)
				*written = w;
			if (failed)
				*failed = i;
			return rc;
		}
	}
	if (written)
		*written = w;
	return 0;
}

/* ===================================================================== */
/* The writer                                                             */

struct instate_writer {
	instate_store *s;           /* its own handle on the store's environment */
	instate_os_mutex mu;
	instate_os_cond work_cv;    /* the thread waits here for batches, or stop */
	instate_os_cond done_cv;    /* flush and close wait here */
	instate_batch *head, *tail; /* submitted, not yet taken by the thread */
	uint64_t submitted, done;
	/* Batches up to this ticket are not committed: submitted before an
	 * error was reported, they may follow the failed one (the store must
	 * hold a prefix of the batches). */
	uint64_t drop_through;
	int err;                    /* the kept error, 0 if none */
	char errmsg[INSTATE_ERRMSG_MAX];
	int stop;
	instate_os_thread_handle thread;
};

/* One batch in one write transaction, run again when the map grew. */
static int commit_batch(instate_writer *w, const instate_batch *b, size_t *failed)
{
	for (;;) {
		instate_txn *txn;
		size_t written = 0;
		int rc = instate_txn_begin(w->s, NULL, 0, &txn);

		if (rc)
			return rc;
		rc = instate_batch_apply(b, txn, &written, failed);
		if (rc == 0 && written > 0)
			rc = instate_txn_commit(txn);
		else
			instate_txn_abort(txn);   /* nothing changed, or failed */
		if (rc != INSTATE_RETRY)
			return rc;
	}
}

/* The message of a failed batch, built on the writer's thread outside the
 * lock (the lock only copies it). */
static void describe(char *msg, const instate_batch *b, size_t failed, int rc)
{
	const batch_op *op;
	const char *nsname;
	int klen;

	if (failed >= b->n) {
		snprintf(msg, INSTATE_ERRMSG_MAX, "async batch %llu failed: %s",
			(unsigned long long)b->ticket, instate_strerror(rc));
		return;
	}
	op = (const batch_op *)(const void *)b->ops.data + failed;
	nsname = instate_ns_name(op->ns, NULL);
	/* Keys are bytes: keep the message short, whatever they hold. */
	klen = op->klen > 64 ? 64 : (int)op->klen;
	snprintf(msg, INSTATE_ERRMSG_MAX,
		"async batch %llu failed: cannot save '%.*s'%s in namespace '%s': %s",
		(unsigned long long)b->ticket, klen, b->data.data + op->koff,
		op->klen > 64 ? "..." : "", nsname, instate_strerror(rc));
}

static void writer_main(void *arg)
{
	instate_writer *w = arg;

	instate__os_mutex_lock(&w->mu);
	for (;;) {
		instate_batch *b;
		int drop, rc = 0;
		size_t failed = (size_t)-1;
		char msg[INSTATE_ERRMSG_MAX];

		while (!w->head && !w->stop)
			instate__os_cond_wait(&w->work_cv, &w->mu);
		b = w->head;
		if (!b)
			break;                   /* stopping, and nothing is left */
		w->head = b->next;
		if (!w->head)
			w->tail = NULL;
		drop = w->err != 0 || b->ticket <= w->drop_through;
		instate__os_mutex_unlock(&w->mu);

		if (!drop) {
			rc = commit_batch(w, b, &failed);
			if (rc)
				describe(msg, b, failed, rc);
		}

		instate__os_mutex_lock(&w->mu);
		if (rc && !w->err) {
			w->err = rc;
			memcpy(w->errmsg, msg, sizeof msg);
		}
		w->done = b->ticket;
		instate__os_cond_broadcast(&w->done_cv);
		instate__os_mutex_unlock(&w->mu);
		instate_batch_free(b);
		instate__os_mutex_lock(&w->mu);
	}
	instate__os_mutex_unlock(&w->mu);
}

int instate_writer_open(instate_store *s, instate_writer **out)
{
	instate_writer *w;
	int rc;

	*out = NULL;
	if (s->readonly)
		return INSTATE_READONLY;
	w = calloc(1, sizeof *w);
	if (!w)
		return ENOMEM;
	if ((rc = instate__store_dup(s, &w->s)) != 0)
		goto fail_dup;
	if ((rc = instate__os_mutex_init(&w->mu)) != 0)
		goto fail_mu;
	if ((rc = instate__os_cond_init(&w->work_cv)) != 0)
		goto fail_work;
	if ((rc = instate__os_cond_init(&w->done_cv)) != 0)
		goto fail_done;
	if ((rc = instate__os_thread_start(&w->thread, writer_main, w)) != 0)
		goto fail_thread;
	*out = w;
	return 0;

fail_thread:
	instate__os_cond_destroy(&w->done_cv);
fail_done:
	instate__os_cond_destroy(&w->work_cv);
fail_work:
	instate__os_mutex_destroy(&w->mu);
fail_mu:
	instate_store_close(w->s);
fail_dup:
	free(w);
	return rc;
}

/* Report the kept error (w->mu held): copy it out, clear it, and make the
 * batches submitted before this report stay uncommitted. */
static int take_error(instate_writer *w, char *err)
{
	int rc = w->err;

	if (err)
		memcpy(err, w->errmsg, INSTATE_ERRMSG_MAX);
	w->err = 0;
	w->errmsg[0] = '\0';
	w->drop_through = w->submitted;
	return rc;
}

int instate_writer_submit(instate_writer *w, instate_batch *b, uint64_t *ticket, char *err)
{
	int rc = 0;

	if (!b)
		return INSTATE_INVALID;
	instate__os_mutex_lock(&w->mu);
	if (w->err) {
		rc = take_error(w, err);
	} else if (w->stop) {
		rc = INSTATE_ENDED;
	} else {
		b->ticket = ++w->submitted;
		b->next = NULL;
		if (w->tail)
			w->tail->next = b;
		else
			w->head = b;
		w->tail = b;
		if (ticket)
			*ticket = b->ticket;
		instate__os_cond_signal(&w->work_cv);
	}
	instate__os_mutex_unlock(&w->mu);
	if (rc && err && rc == INSTATE_ENDED)
		snprintf(err, INSTATE_ERRMSG_MAX, "the writer is closing");
	return rc;
}

/* Wait until every submitted batch is done (w->mu held), unless that would
 * deadlock: the calling thread holds the writer slot the batches need. */
static int wait_all(instate_writer *w)
{
	if (w->done != w->submitted && instate__slot_mine(w->s->env))
		return INSTATE_BUSY;
	while (w->done != w->submitted)
		instate__os_cond_wait(&w->done_cv, &w->mu);
	return 0;
}

int instate_writer_flush(instate_writer *w, uint64_t *revision, char *err)
{
	int rc;

	instate__os_mutex_lock(&w->mu);
	rc = wait_all(w);
	if (rc == 0 && w->err)
		rc = take_error(w, err);
	instate__os_mutex_unlock(&w->mu);
	if (rc == INSTATE_BUSY && err)
		snprintf(err, INSTATE_ERRMSG_MAX,
			"cannot wait for the writer inside a write transaction of this thread");
	if (rc == 0 && revision)
		rc = instate_store_revision(w->s, revision);
	return rc;
}

void instate_writer_info_get(instate_writer *w, instate_writer_info *out)
{
	instate__os_mutex_lock(&w->mu);
	out->submitted = w->submitted;
	out->done = w->done;
	out->error = w->err;
	instate__os_mutex_unlock(&w->mu);
}

int instate_writer_close(instate_writer *w, char *err)
{
	int rc;

	if (!w)
		return 0;
	instate__os_mutex_lock(&w->mu);
	rc = wait_all(w);
	if (rc == INSTATE_BUSY) {
		instate__os_mutex_unlock(&w->mu);
		if (err)
			snprintf(err, INSTATE_ERRMSG_MAX,
				"cannot close the writer inside a write transaction of this thread");
		return rc;
	}
	if (w->err)
		rc = take_error(w, err);
	w->stop = 1;
	instate__os_cond_signal(&w->work_cv);
	instate__os_mutex_unlock(&w->mu);
	instate__os_thread_join(w->thread);
	instate__os_cond_destroy(&w->done_cv);
	instate__os_cond_destroy(&w->work_cv);
	instate__os_mutex_destroy(&w->mu);
	instate_store_close(w->s);
	free(w);
	return rc;
}
