/* raftka.v1._records: the compiled decoder of a RecordBatch v2 records section.

Optional: recordbatch.py falls back to aiokafka's compiled reader when this module did not
build (no C compiler), with the same results and errors. What it adds is building the
client's record objects straight from the bytes: one tuple-subclass instance per record
(topic, partition, offset, key, value, headers, timestamp_ms), or, for the batch API, one
list per column. No intermediate record objects, no per-record Python code.

The bytes are hostile (they come from the network): every read is bounds-checked against
the end of the section, varints longer than 10 bytes or wider than 64 bits are refused,
every record must use exactly the bytes its length says, the section must hold exactly
`count` records and nothing after them. Any violation raises ValueError saying which record
and what was wrong (the caller turns it into CorruptBatchError). What it accepts is exactly
what the node's produce check (aiokafka's reader, recordbatch.validate_records) accepts:
a batch the node stored must decode for every reader, or its partition is stuck for them.
So a negative key, value or header value length is null, whatever its value (Kafka's
readers do the same), not only -1.

Record layout (varint = zigzag LEB128):
    length varint | attributes int8 (read as a varint, as aiokafka does) | timestampDelta varlong | offsetDelta varint |
    keyLength varint (< 0 null) | key | valueLength varint (< 0 null) | value |
    headersCount varint | headers [keyLength varint, key utf-8, valueLength varint, value]
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} cursor;

/* zigzag LEB128, at most 10 bytes, 64 bits; 0 on success */
static int read_varint(cursor *c, int64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (c->p < c->end) {
        unsigned char b = *c->p++;
        if (shift == 63 && (b & 0xFE)) return -1; /* bit 64+ or an 11th byte */
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* bytes of length n at the cursor, or None for any negative n (null, as every Kafka
   reader takes it); NULL (error set) when n overruns the bytes left */
static PyObject *read_bytes(cursor *c, int64_t n, Py_ssize_t index, const char *what) {
    if (n < 0) Py_RETURN_NONE;
    if (n > (int64_t)(c->end - c->p)) {
        PyErr_Format(PyExc_ValueError,
                     "record %zd: %s length %lld does not fit the %zd bytes left", index,
                     what, (long long)n, (Py_ssize_t)(c->end - c->p));
        return NULL;
    }
    PyObject *o = PyBytes_FromStringAndSize((const char *)c->p, (Py_ssize_t)n);
    c->p += n;
    return o;
}

static PyObject *varint_error(Py_ssize_t index, const char *what) {
    PyErr_Format(PyExc_ValueError, "record %zd: %s is not a valid varint (truncated or "
                 "over 64 bits)", index, what);
    return NULL;
}

/* one record's headers as a tuple of (str, bytes | None); empty: the shared () */
static PyObject *read_headers(cursor *c, Py_ssize_t index, PyObject *empty) {
    int64_t n;
    if (read_varint(c, &n)) return varint_error(index, "headersCount");
    if (n == 0) {
        Py_INCREF(empty);
        return empty;
    }
    /* each header takes at least 2 bytes: a bound before allocating */
    if (n < 0 || n > (int64_t)(c->end - c->p) / 2) {
        PyErr_Format(PyExc_ValueError, "record %zd: headersCount %lld is invalid for the "
                     "%zd bytes left", index, (long long)n, (Py_ssize_t)(c->end - c->p));
        return NULL;
    }
    PyObject *headers = PyTuple_New((Py_ssize_t)n);
    if (headers == NULL) return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
        int64_t klen, vlen;
        if (read_varint(c, &klen)) goto varint_fail;
        if (klen < 0 || klen > (int64_t)(c->end - c->p)) {
            PyErr_Format(PyExc_ValueError, "record %zd: header key length %lld is invalid",
                         index, (long long)klen);
            goto fail;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)c->p, (Py_ssize_t)klen, "strict");
        if (key == NULL) goto fail; /* UnicodeDecodeError, a ValueError */
        c->p += klen;
        if (read_varint(c, &vlen)) {
            Py_DECREF(key);
            goto varint_fail;
        }
        PyObject *value = read_bytes(c, vlen, index, "header value");
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, key);
        PyTuple_SET_ITEM(pair, 1, value);
        PyObject_GC_UnTrack(pair); /* a str and bytes: no cycle possible (see decode) */
        PyTuple_SET_ITEM(headers, i, pair);
    }
    PyObject_GC_UnTrack(headers);
    return headers;
varint_fail:
    varint_error(index, "a header length");
fail:
    Py_DECREF(headers);
    return NULL;
}

/* The head of record `i` at cursor c: its length (checked against the bytes left), then
   attributes, timestampDelta and offsetDelta. Sets *r to the record's own bytes (after the
   length; r->p after offsetDelta) and moves c past the record. 0, or -1 with the error set. */
static int record_head(cursor *c, Py_ssize_t i, cursor *r, int64_t *ts_delta,
                       int64_t *offset_delta) {
    int64_t length, attributes; /* attributes unused; read as a varint like aiokafka's
                                   reader (Kafka writes 0) */
    if (read_varint(c, &length)) { varint_error(i, "length"); return -1; }
    if (length < 1 || length > (int64_t)(c->end - c->p)) {
        PyErr_Format(PyExc_ValueError, "record %zd: length %lld does not fit the %zd "
                     "bytes left", i, (long long)length, (Py_ssize_t)(c->end - c->p));
        return -1;
    }
    r->p = c->p;
    r->end = c->p + length;
    c->p = r->end;
    if (read_varint(r, &attributes)) { varint_error(i, "attributes"); return -1; }
    if (read_varint(r, ts_delta)) { varint_error(i, "timestampDelta"); return -1; }
    if (read_varint(r, offset_delta)) { varint_error(i, "offsetDelta"); return -1; }
    return 0;
}

/* 0 if record `i`'s fields ended exactly at its end, else -1 with the error set. */
static int record_end_check(const cursor *r, Py_ssize_t i) {
    if (r->p == r->end) return 0;
    PyErr_Format(PyExc_ValueError, "record %zd: its fields end %zd bytes before the end its "
                 "length gives", i, (Py_ssize_t)(r->end - r->p));
    return -1;
}

/* 0 if the section ended right after the `count` records, else -1 with the error set. */
static int section_end_check(const cursor *c, Py_ssize_t count) {
    if (c->p == c->end) return 0;
    PyErr_Format(PyExc_ValueError, "%zd bytes left after the %zd records the batch "
                 "announces", (Py_ssize_t)(c->end - c->p), count);
    return -1;
}

/* decode(data, start, end, count, base_offset, base_timestamp, append_timestamp, first,
          cls, topic, partition)

   Records of data[start:end] (a records section, uncompressed). append_timestamp: None,
   or the batch's maxTimestamp when it is log-append time (every record gets it). Records
   below offset `first` are parsed (and checked) but not returned.
   cls a tuple subclass: a list of cls(topic, partition, offset, key, value, headers,
   timestamp). cls None: (offsets, keys, values, timestamps, headers), five lists. */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, end, count;
    long long base_offset, base_ts, first;
    PyObject *append_ts_obj, *cls, *topic, *partition;
    if (!PyArg_ParseTuple(args, "y*nnnLLOLOOO", &buf, &start, &end, &count, &base_offset,
                          &base_ts, &append_ts_obj, &first, &cls, &topic, &partition))
        return NULL;
    PyObject *result = NULL, *out = NULL;
    PyObject *cols[5] = {NULL, NULL, NULL, NULL, NULL};
    PyObject *empty = PyTuple_New(0);
    PyTypeObject *type = NULL;
    int log_append = append_ts_obj != Py_None;
    long long append_ts = 0;
    if (empty == NULL) goto done;
    if (log_append) {
        append_ts = PyLong_AsLongLong(append_ts_obj);
        if (append_ts == -1 && PyErr_Occurred()) goto done;
    }
    if (start < 0 || end < start || end > buf.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "records section bounds are outside the buffer");
        goto done;
    }
    /* a record takes at least 7 bytes: a bound on count before allocating anything */
    if (count > (end - start) / 7 + 1) {
        PyErr_Format(PyExc_ValueError, "recordCount %zd cannot fit a records section of %zd "
                     "bytes", count, end - start);
        goto done;
    }
    if (cls != Py_None) {
        if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "cls must be a tuple subclass or None");
            goto done;
        }
        type = (PyTypeObject *)cls;
        out = PyList_New(0);
        if (out == NULL) goto done;
    } else {
        for (int k = 0; k < 5; k++) {
            cols[k] = PyList_New(0);
            if (cols[k] == NULL) goto done;
        }
    }
    /* Records leave the collector's lists: a record holds only ints, bytes, None, the
       caller's topic and partition and its (untracked) headers, so it can be in no cycle.
       Tracked, each one made every collection walk it: reading a backlog spent more time
       in the collector than in decoding (0.43-0.54 s of CPU per 1M records against 0.14 s
       with the collector off). Not for a subclass with a __dict__ or slots of its own,
       whose extra fields could point anywhere. */
    int untrack = type != NULL && !PyObject_GC_IsTracked(topic) &&
                  !PyObject_GC_IsTracked(partition) && type->tp_dictoffset == 0 &&
                  type->tp_basicsize == PyTuple_Type.tp_basicsize;
    cursor c = {(const unsigned char *)buf.buf + start, (const unsigned char *)buf.buf + end};
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t ts_delta, offset_delta, klen, vlen;
        cursor r;
        if (record_head(&c, i, &r, &ts_delta, &offset_delta)) goto done;
        if (read_varint(&r, &klen)) { varint_error(i, "keyLength"); goto done; }
        /* the deltas come off the wire: add them unsigned, so an overflow wraps as in
           aiokafka's int64 arithmetic instead of being undefined behaviour */
        long long offset = (long long)((uint64_t)base_offset + (uint64_t)offset_delta);
        int keep = offset >= first;
        PyObject *key = NULL, *value = NULL, *headers = NULL;
        if (keep) {
            if ((key = read_bytes(&r, klen, i, "key")) == NULL) goto done;
        } else if (klen > 0) {
            if (klen > (int64_t)(r.end - r.p)) { read_bytes(&r, klen, i, "key"); goto done; }
            r.p += klen;
        }
        if (read_varint(&r, &vlen)) { Py_XDECREF(key); varint_error(i, "valueLength"); goto done; }
        if ((value = read_bytes(&r, vlen, i, "value")) == NULL) { Py_XDECREF(key); goto done; }
        if ((headers = read_headers(&r, i, empty)) == NULL) {
            Py_XDECREF(key);
            Py_DECREF(value);
            goto done;
        }
        if (record_end_check(&r, i)) {
            Py_XDECREF(key);
            Py_DECREF(value);
            Py_DECREF(headers);
            goto done;
        }
        if (!keep) {
            Py_DECREF(value);
            Py_DECREF(headers);
            continue;
        }
        long long ts = log_append ? append_ts
                                  : (long long)((uint64_t)base_ts + (uint64_t)ts_delta);
        PyObject *offset_obj = PyLong_FromLongLong(offset);
        PyObject *ts_obj = PyLong_FromLongLong(ts);
        if (offset_obj == NULL || ts_obj == NULL) {
            Py_XDECREF(offset_obj);
            Py_XDECREF(ts_obj);
            Py_DECREF(key);
            Py_DECREF(value);
            Py_DECREF(headers);
            goto done;
        }
        if (type != NULL) {
            PyObject *rec = type == &PyTuple_Type ? PyTuple_New(7) : type->tp_alloc(type, 7);
            if (rec == NULL) {
                Py_DECREF(offset_obj);
                Py_DECREF(ts_obj);
                Py_DECREF(key);
                Py_DECREF(value);
                Py_DECREF(headers);
                goto done;
            }
            Py_INCREF(topic);
            Py_INCREF(partition);
            PyTuple_SET_ITEM(rec, 0, topic);
            PyTuple_SET_ITEM(rec, 1, partition);
            PyTuple_SET_ITEM(rec, 2, offset_obj);
            PyTuple_SET_ITEM(rec, 3, key);
            PyTuple_SET_ITEM(rec, 4, value);
            PyTuple_SET_ITEM(rec, 5, headers);
            PyTuple_SET_ITEM(rec, 6, ts_obj);
            if (untrack) PyObject_GC_UnTrack(rec);
            int err = PyList_Append(out, rec);
            Py_DECREF(rec);
            if (err) goto done;
        } else {
            PyObject *items[5] = {offset_obj, key, value, ts_obj, headers};
            int err = 0;
            for (int k = 0; k < 5; k++) {
                if (!err) err = PyList_Append(cols[k], items[k]);
                Py_DECREF(items[k]);
            }
            if (err) goto done;
        }
    }
    if (section_end_check(&c, count)) goto done;
    if (type != NULL) {
        result = out;
        out = NULL;
    } else {
        result = PyTuple_Pack(5, cols[0], cols[1], cols[2], cols[3], cols[4]);
    }
done:
    Py_XDECREF(out);
    for (int k = 0; k < 5; k++) Py_XDECREF(cols[k]);
    Py_XDECREF(empty);
    PyBuffer_Release(&buf);
    return result;
}

/* validate(data, start, end, count): check the records section data[start:end]
   (uncompressed) as decode() reads it, and that it holds exactly `count` records whose
   offsetDeltas run 0, 1, 2, ...; builds nothing (header keys are decoded as UTF-8 and
   dropped). The node's produce-time check of every batch: ~10 ns a record instead of a
   record object per record. Raises ValueError saying which record and what was wrong. */
static PyObject *validate(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, end, count;
    if (!PyArg_ParseTuple(args, "y*nnn", &buf, &start, &end, &count)) return NULL;
    PyObject *result = NULL;
    if (start < 0 || end < start || end > buf.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "records section bounds are outside the buffer");
        goto done;
    }
    cursor c = {(const unsigned char *)buf.buf + start, (const unsigned char *)buf.buf + end};
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t ts_delta, offset_delta, n;
        cursor r;
        if (record_head(&c, i, &r, &ts_delta, &offset_delta)) goto done;
        if (offset_delta != i) {
            PyErr_Format(PyExc_ValueError, "record %zd has offsetDelta %lld (expected %zd)",
                         i, (long long)offset_delta, i);
            goto done;
        }
        for (int field = 0; field < 2; field++) { /* key, value */
            if (read_varint(&r, &n)) {
                varint_error(i, field ? "valueLength" : "keyLength");
                goto done;
            }
            if (n < 0) continue; /* null: any negative length, as Kafka and the readers */
            if (n > (int64_t)(r.end - r.p)) {
                PyErr_Format(PyExc_ValueError, "record %zd: %s length %lld does not fit the "
                             "%zd bytes left", i, field ? "value" : "key", (long long)n,
                             (Py_ssize_t)(r.end - r.p));
                goto done;
            }
            r.p += n;
        }
        if (read_varint(&r, &n)) { varint_error(i, "headersCount"); goto done; }
        if (n < 0 || n > (int64_t)(r.end - r.p) / 2) {
            PyErr_Format(PyExc_ValueError, "record %zd: headersCount %lld is invalid for the "
                         "%zd bytes left", i, (long long)n, (Py_ssize_t)(r.end - r.p));
            goto done;
        }
        for (int64_t h = 0; h < n; h++) {
            int64_t klen, vlen;
            if (read_varint(&r, &klen)) { varint_error(i, "a header length"); goto done; }
            if (klen < 0 || klen > (int64_t)(r.end - r.p)) {
                PyErr_Format(PyExc_ValueError, "record %zd: header key length %lld is "
                             "invalid", i, (long long)klen);
                goto done;
            }
            PyObject *key = PyUnicode_DecodeUTF8((const char *)r.p, (Py_ssize_t)klen,
                                                 "strict");
            if (key == NULL) goto done; /* UnicodeDecodeError, a ValueError */
            Py_DECREF(key);
            r.p += klen;
            if (read_varint(&r, &vlen)) { varint_error(i, "a header length"); goto done; }
            if (vlen < 0) continue; /* null, as above */
            if (vlen > (int64_t)(r.end - r.p)) {
                PyErr_Format(PyExc_ValueError, "record %zd: header value length %lld does "
                             "not fit the %zd bytes left", i, (long long)vlen,
                             (Py_ssize_t)(r.end - r.p));
                goto done;
            }
            r.p += vlen;
        }
        if (record_end_check(&r, i)) goto done;
    }
    if (section_end_check(&c, count)) goto done;
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, start, end, count, base_offset, base_timestamp, append_timestamp, first, "
     "cls, topic, partition): the records of a records section (see the module source)."},
    {"validate", validate, METH_VARARGS,
     "validate(data, start, end, count): None if the records section holds exactly count "
     "records with offset deltas 0, 1, 2, ... that decode() reads; else ValueError."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "raftka.v1._records",
    "Compiled decoder of RecordBatch v2 records sections (optional; see recordbatch.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
