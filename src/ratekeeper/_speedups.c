/* ratekeeper._speedups: the admitted hot path of a decorated call, in C.
 *
 * The pure-Python decorator is the specification; this module is an optional fast path
 * for its commonest case (one rate, a constant cost, MemoryStorage) and must decide exactly
 * as ratekeeper/_algorithms.py does, on the very same state tuples in the very same table,
 * under the very same lock.  Anything else -- a refusal, a new key, a changed source, a
 * policy with several rates -- is handed to the Python wrapper, which decides again from
 * scratch (a refusal here consumed nothing, so deciding again is safe).
 *
 * Contents:
 *   Lock     a mutex with threading.Lock's interface whose try-acquire costs a few ns in
 *            C; MemoryStorage uses it so the Python path and this one exclude each other.
 *   Limited  the decorated callable: version check, lock, clock, one step, call.
 *   step()   one algorithm step on a state tuple, for the differential tests.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <structmember.h>
#include <time.h>

#define ALG_FIXED 0
#define ALG_SLIDING_WINDOW 1
#define ALG_SLIDING_LOG 2
#define ALG_TOKEN_BUCKET 3

typedef long long i64;

static PyObject *time_module = NULL;     /* the time module */
static PyObject *monotonic_ns = NULL;    /* time.monotonic_ns as imported: the real clock */
static PyObject *str_version = NULL;
static PyObject *str_monotonic_ns = NULL;

/* floor(a / b) for b > 0, as Python's a // b. */
static inline i64 floordiv(i64 a, i64 b) {
    i64 q = a / b;
    if ((a % b != 0) && (a < 0)) {
        q -= 1;
    }
    return q;
}

/* ---------------------------------------------------------------------------------- */
/* Lock                                                                                */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int locked;
} LockObject;

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Lock() takes no arguments");
        return NULL;
    }
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    self->locked = 0;
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void Lock_dealloc(LockObject *self) {
    if (self->lock != NULL) {
        if (self->locked) {
            PyThread_release_lock(self->lock);
        }
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline int lock_try(LockObject *self) {
    if (PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        self->locked = 1;
        return 1;
    }
    return 0;
}

static inline void lock_release(LockObject *self) {
    self->locked = 0;
    PyThread_release_lock(self->lock);
}

/* Acquire, waiting with the GIL released; timeout in seconds (< 0: forever). */
static int lock_wait(LockObject *self, double timeout) {
    if (lock_try(self)) {
        return 1;
    }
    PY_TIMEOUT_T micros = timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    PyLockStatus status;
    Py_BEGIN_ALLOW_THREADS
    status = PyThread_acquire_lock_timed(self->lock, micros, 0);
    Py_END_ALLOW_THREADS
    if (status == PY_LOCK_ACQUIRED) {
        self->locked = 1;
        return 1;
    }
    return 0;
}

static PyObject *Lock_acquire(LockObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pd:acquire", kwlist, &blocking, &timeout)) {
        return NULL;
    }
    if (!blocking) {
        return PyBool_FromLong(lock_try(self));
    }
    return PyBool_FromLong(lock_wait(self, timeout));
}

static PyObject *Lock_release(LockObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    lock_release(self);
    Py_RETURN_NONE;
}

static PyObject *Lock_enter(LockObject *self, PyObject *Py_UNUSED(ignored)) {
    lock_wait(self, -1);
    Py_RETURN_TRUE;
}

static PyObject *Lock_exit(LockObject *self, PyObject *Py_UNUSED(args)) {
    return Lock_release(self, NULL);
}

static PyObject *Lock_locked(LockObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(self->locked);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "Release the lock."},
    {"locked", (PyCFunction)Lock_locked, METH_NOARGS, "True while the lock is held."},
    {"__enter__", (PyCFunction)Lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Lock_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ratekeeper._speedups.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mutex with threading.Lock's interface that C code can try cheaply.",
    .tp_methods = Lock_methods,
    .tp_new = Lock_new,
};

/* ---------------------------------------------------------------------------------- */
/* The algorithm steps, as in _algorithms.py, for an admission check with max_wait 0.  */

typedef struct {
    int algorithm;
    i64 amount, period, capacity, interval, cost;
} Meter;

/* Read item i of a state tuple; -1 with an exception set on failure. */
static inline int item(PyObject *state, Py_ssize_t i, i64 *out) {
    *out = PyLong_AsLongLong(PyTuple_GET_ITEM(state, i));
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The integer for values[i]: the old state's item that holds it, where item i came from
 * old item i + shift (a log whose oldest entries expired), or a new one.  New reference. */
static inline PyObject *value_at(i64 *values, Py_ssize_t i, PyObject *old, Py_ssize_t old_n,
                                 Py_ssize_t shift) {
    Py_ssize_t j = i == 0 ? 0 : i + shift;
    if (j < old_n) {
        PyObject *candidate = PyTuple_GET_ITEM(old, j);
        if (PyLong_AsLongLong(candidate) == values[i]) {
            return Py_NewRef(candidate);
        }
    }
    return PyLong_FromLongLong(values[i]);
}

/* The new state as a tuple of `values`.  Integers the old state already holds are shared
 * rather than allocated again (see value_at); and when only the table refers to the old
 * state (`reuse`), it is updated in place: nobody else can see it, and the decision then
 * allocates nothing but the integers that changed.  Returns a new reference. */
static PyObject *tuple_of(i64 *values, Py_ssize_t n, PyObject *old, int reuse,
                          Py_ssize_t shift) {
    Py_ssize_t old_n = old == NULL ? 0 : PyTuple_GET_SIZE(old);
    if (reuse && old_n == n) {
        /* Ascending: item i + shift is read before it is itself replaced. */
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(old, i);
            if (PyLong_AsLongLong(item) != values[i]) {
                /* A token bucket's state repeats its first value: one integer serves. */
                PyObject *v = i > 0 && values[i] == values[i - 1]
                                  ? Py_NewRef(PyTuple_GET_ITEM(old, i - 1))
                                  : value_at(values, i, old, old_n, shift);
                if (v == NULL) {
                    return NULL; /* the state is still whole: items are swapped one by one */
                }
                PyTuple_SET_ITEM(old, i, v);
                Py_DECREF(item);
            }
        }
        return Py_NewRef(old);
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = i > 0 && values[i] == values[i - 1]
                          ? Py_NewRef(PyTuple_GET_ITEM(t, i - 1))
                          : value_at(values, i, old, old_n, shift);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* One step.  Returns 1 admitted (*out = new state, a new reference), 0 refused, -1 error.
 * state is NULL or a tuple as the Python steps write them. */
static int decide_step(const Meter *m, PyObject *state, i64 now, PyObject **out, int reuse) {
    i64 v[4];
    *out = NULL;
    if (state != NULL && !PyTuple_CheckExact(state)) {
        PyErr_SetString(PyExc_TypeError, "a state must be a tuple");
        return -1;
    }
    Py_ssize_t size = state == NULL ? 0 : PyTuple_GET_SIZE(state);
    switch (m->algorithm) {
    case ALG_FIXED: {
        i64 index = floordiv(now, m->period), count = 0;
        if (state != NULL) {
            if (size != 3 || item(state, 1, &v[1]) || item(state, 2, &v[2])) {
                goto bad;
            }
            if (v[1] >= index) {
                index = v[1];
                count = v[2];
            }
        }
        if (count + m->cost > m->amount) {
            return 0;
        }
        i64 values[3] = {(index + 1) * m->period, index, count + m->cost};
        *out = tuple_of(values, 3, state, reuse, 0);
        return *out == NULL ? -1 : 1;
    }
    case ALG_SLIDING_WINDOW: {
        i64 period = m->period, index = floordiv(now, period), current = 0, previous = 0;
        if (state != NULL) {
            if (size != 4 || item(state, 1, &v[1]) || item(state, 2, &v[2]) ||
                item(state, 3, &v[3])) {
                goto bad;
            }
            if (v[1] >= index) {
                index = v[1];
                current = v[2];
                previous = v[3];
            } else if (v[1] == index - 1) {
                previous = v[2];
            }
        }
        i64 elapsed = now - index * period;
        if (elapsed < 0) {
            elapsed = 0;
        }
        /* Exactly Python's float(previous) * (period - elapsed) / period + current. */
        double used = (double)previous * (double)(period - elapsed) / (double)period +
                      (double)current;
        if (!(used + (double)m->cost <= (double)m->amount)) {
            return 0;
        }
        i64 values[4] = {(index + 2) * period, index, current + m->cost, previous};
        *out = tuple_of(values, 4, state, reuse, 0);
        return *out == NULL ? -1 : 1;
    }
    case ALG_SLIDING_LOG: {
        i64 horizon = now - m->period, used = 0;
        if (state != NULL && (size < 1 || size % 2 != 1)) {
            goto bad;
        }
        /* expiry + pairs + one more pair; on the stack while the log is short */
        i64 small[64];
        i64 *live = size + 3 <= 64 ? small : PyMem_Malloc(sizeof(i64) * (size_t)(size + 3));
        if (live == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t n = 1; /* live[0] is the expiry, filled in below */
        Py_ssize_t shift = 0; /* items of expired entries: a prefix, since times ascend */
        for (Py_ssize_t i = 1; i + 1 < size; i += 2) {
            i64 t, u;
            if (item(state, i, &t) || item(state, i + 1, &u)) {
                if (live != small) {
                    PyMem_Free(live);
                }
                return -1;
            }
            if (t > horizon) {
                live[n++] = t;
                live[n++] = u;
                used += u;
            } else if (n == 1) {
                shift += 2;
            }
        }
        if (used + m->cost > m->amount) {
            if (live != small) {
                PyMem_Free(live);
            }
            return 0;
        }
        i64 at = now;
        if (n > 1 && live[n - 2] >= now) {
            at = live[n - 2];
            live[n - 1] += m->cost;
        } else {
            live[n++] = now;
            live[n++] = m->cost;
        }
        live[0] = at + m->period;
        *out = tuple_of(live, n, state, reuse, shift);
        if (live != small) {
            PyMem_Free(live);
        }
        return *out == NULL ? -1 : 1;
    }
    case ALG_TOKEN_BUCKET: {
        i64 interval = m->interval, capacity = m->capacity, tat = now;
        if (state != NULL) {
            if (size != 4 || item(state, 1, &v[1]) || item(state, 2, &v[2]) ||
                item(state, 3, &v[3])) {
                goto bad;
            }
            if (v[1] > now) {
                tat = v[1];
                if (v[2] != interval || v[3] != capacity) {
                    if (v[2] <= 0) {
                        goto bad;
                    }
                    i64 level = floordiv(v[3] * v[2] - (v[1] - now), v[2]);
                    if (level > capacity) {
                        level = capacity;
                    }
                    tat = now + (capacity - level) * interval;
                }
            }
        }
        i64 new_tat = tat + m->cost * interval;
        if (new_tat - capacity * interval - now > 0) {
            return 0;
        }
        i64 values[4] = {new_tat, new_tat, interval, capacity};
        *out = tuple_of(values, 4, state, reuse, 0);
        return *out == NULL ? -1 : 1;
    }
    }
    PyErr_SetString(PyExc_ValueError, "unknown algorithm code");
    return -1;
bad:
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "malformed state tuple");
    }
    return -1;
}

static PyObject *speedups_step(PyObject *Py_UNUSED(module), PyObject *args) {
    Meter m;
    PyObject *state;
    i64 now;
    if (!PyArg_ParseTuple(args, "iOLLLLLL:step", &m.algorithm, &state, &now, &m.amount,
                          &m.period, &m.capacity, &m.interval, &m.cost)) {
        return NULL;
    }
    if (m.period <= 0 || m.algorithm < 0 || m.algorithm > 3) {
        PyErr_SetString(PyExc_ValueError, "bad meter");
        return NULL;
    }
    PyObject *out;
    int admitted = decide_step(&m, state == Py_None ? NULL : state, now, &out, 0);
    if (admitted < 0) {
        return NULL;
    }
    if (!admitted) {
        return Py_BuildValue("(OO)", Py_False, Py_None);
    }
    return Py_BuildValue("(ON)", Py_True, out);
}

/* ---------------------------------------------------------------------------------- */
/* Limited                                                                             */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;       /* __dict__: functools.wraps writes __wrapped__, __name__, ... */
    PyObject *fn;         /* the decorated function */
    PyObject *slow;       /* the Python wrapper: the specification, and every other case */
    PyObject *source;     /* its .version is compared by identity */
    PyObject *gate;       /* an object whose attribute gate_attr is compared by identity too */
    PyObject *gate_attr;
    PyObject *reconfigure; /* called when either moved; it calls configure() */
    PyObject *states;     /* MemoryStorage's table: {(slot, key): state} */
    LockObject *lock;     /* MemoryStorage's lock */
    PyObject *clock;      /* None: time.monotonic_ns; else a callable returning int µs */
    PyObject *key;        /* the constant key (str), or NULL when key_fn is set */
    PyObject *key_fn;     /* a callable of the call's arguments, or NULL */
    /* Set by configure(); read together after the version check. */
    PyObject *version;
    PyObject *gate_value;
    PyObject *slot;       /* the meter's slot string */
    PyObject *slot_key;   /* (slot, key) for a constant key */
    int enabled;
    Meter meter;
    Py_ssize_t fast_calls;  /* calls admitted here, for tests and stats */
} LimitedObject;

static PyObject *Limited_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames);

static int Limited_traverse(LimitedObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->dict);
    Py_VISIT(self->fn);
    Py_VISIT(self->slow);
    Py_VISIT(self->source);
    Py_VISIT(self->gate);
    Py_VISIT(self->gate_attr);
    Py_VISIT(self->reconfigure);
    Py_VISIT(self->gate_value);
    Py_VISIT(self->states);
    Py_VISIT(self->lock);
    Py_VISIT(self->clock);
    Py_VISIT(self->key);
    Py_VISIT(self->key_fn);
    Py_VISIT(self->version);
    Py_VISIT(self->slot);
    Py_VISIT(self->slot_key);
    return 0;
}

static int Limited_clear(LimitedObject *self) {
    Py_CLEAR(self->dict);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->source);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->gate_attr);
    Py_CLEAR(self->reconfigure);
    Py_CLEAR(self->gate_value);
    Py_CLEAR(self->states);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->key);
    Py_CLEAR(self->key_fn);
    Py_CLEAR(self->version);
    Py_CLEAR(self->slot);
    Py_CLEAR(self->slot_key);
    self->enabled = 0;
    return 0;
}

static void Limited_dealloc(LimitedObject *self) {
    PyObject_GC_UnTrack(self);
    Limited_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Limited_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fn",    "slow", "source", "gate",   "gate_attr",   "states",
                             "lock",  "clock", "key",   "key_fn", "reconfigure", NULL};
    PyObject *fn, *slow, *source, *gate, *gate_attr, *states, *lock, *clock, *key, *key_fn;
    PyObject *reconfigure;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOUO!O!OOOO:Limited", kwlist, &fn, &slow,
                                     &source, &gate, &gate_attr, &PyDict_Type, &states,
                                     &LockType, &lock, &clock, &key, &key_fn, &reconfigure)) {
        return NULL;
    }
    if (!PyCallable_Check(fn) || !PyCallable_Check(slow) || !PyCallable_Check(reconfigure)) {
        PyErr_SetString(PyExc_TypeError, "fn, slow and reconfigure must be callable");
        return NULL;
    }
    if (key_fn == Py_None && !PyUnicode_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "key must be a str when key_fn is None");
        return NULL;
    }
    LimitedObject *self = (LimitedObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = Limited_vectorcall;
    self->fn = Py_NewRef(fn);
    self->slow = Py_NewRef(slow);
    self->source = Py_NewRef(source);
    self->gate = Py_NewRef(gate);
    self->gate_attr = Py_NewRef(gate_attr);
    PyUnicode_InternInPlace(&self->gate_attr);
    self->reconfigure = Py_NewRef(reconfigure);
    self->states = Py_NewRef(states);
    self->lock = (LockObject *)Py_NewRef(lock);
    self->clock = clock == Py_None ? NULL : Py_NewRef(clock);
    self->key = key_fn == Py_None ? Py_NewRef(key) : NULL;
    self->key_fn = key_fn == Py_None ? NULL : Py_NewRef(key_fn);
    self->enabled = 0;
    return (PyObject *)self;
}

/* configure(version, gate_value, enabled, algorithm, amount, period, capacity, interval,
 *           cost, slot) */
static PyObject *Limited_configure(LimitedObject *self, PyObject *args) {
    PyObject *version, *gate_value, *slot;
    int enabled;
    Meter m;
    if (!PyArg_ParseTuple(args, "OOpiLLLLLU:configure", &version, &gate_value, &enabled,
                          &m.algorithm, &m.amount, &m.period, &m.capacity, &m.interval,
                          &m.cost, &slot)) {
        return NULL;
    }
    if (enabled && (m.period <= 0 || m.algorithm < 0 || m.algorithm > 3 || m.cost < 1 ||
                    m.cost > m.capacity)) {
        PyErr_SetString(PyExc_ValueError, "configure: a meter the fast path cannot decide");
        return NULL;
    }
    PyObject *slot_key = NULL;
    if (self->key != NULL) {
        slot_key = PyTuple_Pack(2, slot, self->key);
        if (slot_key == NULL) {
            return NULL;
        }
    }
    /* No Python code runs from here on: a concurrent call sees all old or all new. */
    PyObject *old_version = self->version, *old_slot = self->slot, *old_slot_key = self->slot_key;
    PyObject *old_gate_value = self->gate_value;
    self->version = Py_NewRef(version);
    self->gate_value = Py_NewRef(gate_value);
    self->slot = Py_NewRef(slot);
    self->slot_key = slot_key;
    self->meter = m;
    self->enabled = enabled;
    Py_XDECREF(old_version);
    Py_XDECREF(old_gate_value);
    Py_XDECREF(old_slot);
    Py_XDECREF(old_slot_key);
    Py_RETURN_NONE;
}

static PyObject *Limited_disable(LimitedObject *self, PyObject *Py_UNUSED(ignored)) {
    self->enabled = 0;
    Py_RETURN_NONE;
}

static inline int read_clock(LimitedObject *self, i64 *now) {
    PyObject *value;
    if (self->clock == NULL) {
        /* Looked up at every call, so a patched time.monotonic_ns (freezegun) is seen. */
        PyObject *current = PyObject_GetAttr(time_module, str_monotonic_ns);
        if (current == NULL) {
            return -1;
        }
        if (current == monotonic_ns) {
            Py_DECREF(current);
            struct timespec ts;
            if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            *now = ((i64)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1000;
            return 0;
        }
        value = PyObject_CallNoArgs(current);
        Py_DECREF(current);
        if (value == NULL) {
            return -1;
        }
        i64 ns = PyLong_AsLongLong(value);
        Py_DECREF(value);
        if (ns == -1 && PyErr_Occurred()) {
            return -1;
        }
        *now = floordiv(ns, 1000);
        return 0;
    }
    value = PyObject_CallNoArgs(self->clock);
    if (value == NULL) {
        return -1;
    }
    *now = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return (*now == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *Limited_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    LimitedObject *self = (LimitedObject *)callable;
    PyObject *version = PyObject_GetAttr(self->source, str_version);
    if (version == NULL) {
        return NULL;
    }
    Py_DECREF(version); /* only identities matter; source and gate keep the objects alive */
    PyObject *gate_value = PyObject_GetAttr(self->gate, self->gate_attr);
    if (gate_value == NULL) {
        return NULL;
    }
    Py_DECREF(gate_value);
    /* From the comparison to the copy no Python code runs: version and meter match. */
    if (version != self->version || gate_value != self->gate_value) {
        PyObject *done = PyObject_CallNoArgs(self->reconfigure);
        if (done == NULL) {
            return NULL;
        }
        Py_DECREF(done);
        goto slow;
    }
    if (!self->enabled) {
        goto slow;
    }
    Meter meter = self->meter;
    PyObject *slot_key;
    if (self->key_fn != NULL) {
        PyObject *slot = Py_NewRef(self->slot);
        PyObject *key = PyObject_Vectorcall(self->key_fn, args, nargsf, kwnames);
        if (key == NULL) {
            Py_DECREF(slot);
            return NULL;
        }
        if (!PyUnicode_CheckExact(key) || version != self->version ||
            gate_value != self->gate_value || !self->enabled) {
            Py_DECREF(key);
            Py_DECREF(slot);
            goto slow; /* str() of other keys, and a change meanwhile, are the slow path's */
        }
        slot_key = PyTuple_Pack(2, slot, key);
        Py_DECREF(key);
        Py_DECREF(slot);
        if (slot_key == NULL) {
            return NULL;
        }
    } else {
        slot_key = Py_NewRef(self->slot_key);
    }
    if (!lock_try(self->lock)) {
        Py_DECREF(slot_key);
        goto slow; /* contended: the slow path waits for the lock with the GIL released */
    }
    i64 now;
    if (read_clock(self, &now) < 0) {
        lock_release(self->lock);
        Py_DECREF(slot_key);
        return NULL;
    }
    PyObject *state = PyDict_GetItemWithError(self->states, slot_key);
    if (state == NULL) {
        lock_release(self->lock);
        Py_DECREF(slot_key);
        if (PyErr_Occurred()) {
            return NULL;
        }
        goto slow; /* a new key: the slow path also sweeps expired ones */
    }
    /* Only the table holds the state: it may be updated in place (see tuple_of). */
    int reuse = Py_REFCNT(state) == 1 && PyTuple_CheckExact(state);
    Py_INCREF(state);
    PyObject *new_state;
    int admitted = decide_step(&meter, state, now, &new_state, reuse);
    Py_DECREF(state);
    if (admitted == 1) {
        int failed = new_state == state ? 0 : PyDict_SetItem(self->states, slot_key, new_state);
        Py_DECREF(new_state);
        if (failed) {
            lock_release(self->lock);
            Py_DECREF(slot_key);
            return NULL;
        }
    }
    lock_release(self->lock);
    Py_DECREF(slot_key);
    if (admitted < 0) {
        return NULL;
    }
    if (admitted) {
        self->fast_calls++;
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
slow:
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static PyObject *Limited_repr(LimitedObject *self) {
    if (self->fn == NULL) {
        return PyUnicode_FromString("<limited function>");
    }
    return PyUnicode_FromFormat("<limited %R>", self->fn);
}

static PyObject *Limited_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type)) {
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static PyObject *Limited_get_enabled(LimitedObject *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->enabled);
}

static PyObject *Limited_get_fast_calls(LimitedObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->fast_calls);
}

static PyMethodDef Limited_methods[] = {
    {"configure", (PyCFunction)Limited_configure, METH_VARARGS,
     "configure(version, enabled, algorithm, amount, period, capacity, interval, cost, slot)"},
    {"disable", (PyCFunction)Limited_disable, METH_NOARGS,
     "Send every call to the slow path until the next configure()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Limited_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"fast_path_enabled", (getter)Limited_get_enabled, NULL,
     "True while calls may be decided here.", NULL},
    {"fast_calls", (getter)Limited_get_fast_calls, NULL,
     "How many calls were admitted by the fast path.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LimitedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ratekeeper._speedups.Limited",
    .tp_basicsize = sizeof(LimitedObject),
    .tp_dealloc = (destructor)Limited_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(LimitedObject, vectorcall),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    /* METHOD_DESCRIPTOR: __get__ binds like a function's, so `obj.method(...)` may call us
     * with obj first instead of building a bound method. */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_repr = (reprfunc)Limited_repr,
    .tp_doc = "A function limited by ratekeeper (the admitted path runs in C).",
    .tp_traverse = (traverseproc)Limited_traverse,
    .tp_clear = (inquiry)Limited_clear,
    .tp_methods = Limited_methods,
    .tp_getset = Limited_getset,
    .tp_descr_get = Limited_descr_get,
    .tp_dictoffset = offsetof(LimitedObject, dict),
    .tp_new = Limited_new,
};

/* ---------------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"step", speedups_step, METH_VARARGS,
     "step(algorithm, state, now, amount, period, capacity, interval, cost) -> "
     "(admitted, new_state): one step with max_wait 0, for tests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ratekeeper._speedups",
    .m_doc = "The admitted hot path of a decorated call, in C (optional).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&LockType) < 0 || PyType_Ready(&LimitedType) < 0) {
        return NULL;
    }
    str_version = PyUnicode_InternFromString("version");
    str_monotonic_ns = PyUnicode_InternFromString("monotonic_ns");
    if (str_version == NULL || str_monotonic_ns == NULL) {
        return NULL;
    }
    time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return NULL;
    }
    monotonic_ns = PyObject_GetAttr(time_module, str_monotonic_ns);
    if (monotonic_ns == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Lock", (PyObject *)&LockType) < 0 ||
        PyModule_AddObjectRef(module, "Limited", (PyObject *)&LimitedType) < 0 ||
        PyModule_AddIntConstant(module, "FIXED_WINDOW", ALG_FIXED) < 0 ||
        PyModule_AddIntConstant(module, "SLIDING_WINDOW", ALG_SLIDING_WINDOW) < 0 ||
        PyModule_AddIntConstant(module, "SLIDING_LOG", ALG_SLIDING_LOG) < 0 ||
        PyModule_AddIntConstant(module, "TOKEN_BUCKET", ALG_TOKEN_BUCKET) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
