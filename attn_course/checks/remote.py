"""Checks run in a trusted process; the learner's code answers from its own, as plain data.

When the classroom grader runs a submission, the learner's notebook executes in a sandboxed process
(the *learner side*) and the checks run in another process that the notebook cannot reach (the
*grader side*). The two talk over a socket:

- the grader side sends a request: a learner object (``Remote``), what to do with it (call it, read
  an attribute, call it and differentiate), and arguments made by the check (tensors, modules,
  generators: pickled, since they come from trusted code);
- the learner side does it and answers with **plain data only**: JSON holding numbers, strings,
  nested lists and tuples, and tensors as dtype, shape and raw bytes. Anything else it returns (a
  module, a function, an array) stays on the learner side and travels as a handle: a new ``Remote``.

The grader side rebuilds each tensor as an exact ``torch.Tensor`` from its bytes (no subclass and
no object of the learner's crosses), compares it with the reference itself and writes the result.
Nothing the notebook does in its own memory (patching the checks, ``torch.allclose``, otter, a
tensor subclass with ``__torch_function__``) reaches the process that decides the score.

One check code serves both modes: ``checks.core.call_learner`` calls the learner's function
directly when it is a real one (the notebook's self-check) and through ``Remote.call`` when it is a
handle. The tripwire (``checks.tripwire``) runs on the learner side and reports the forbidden call
it saw in the answer.
"""
import base64
import io
import json
import math
import pickle
import socket
import struct
import time

import torch

MAX_FRAME = 64 << 20          # bytes in one message: far above any check's tensors
MAX_DEPTH = 16                # nesting of lists and tuples in an answer
MAX_ITEMS = 100_000           # list items in one answer
MAX_TEXT = 20_000             # characters kept of a string in an answer
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}
_EXCEPTIONS = {e.__name__: e for e in (
    ArithmeticError, AssertionError, AttributeError, IndexError, KeyError, LookupError, NameError,
    NotImplementedError, OverflowError, RecursionError, RuntimeError, TypeError, ValueError, ZeroDivisionError)}


class LearnerError(Exception):
    """The learner's code raised ``type_name`` (an exception class of theirs, or one the grader side does not
    rebuild); ``str(err)`` is its message."""

    def __init__(self, type_name, message):
        super().__init__(message)
        self.type_name = type_name


class Unanswered(Exception):
    """The learner side gave no usable answer: it ended, ran past the time left, or sent malformed data."""


# -- framing ---------------------------------------------------------------------------------------------------

def send_frame(sock, payload):
    """Send one message: its length (8 bytes, big-endian), then ``payload`` (bytes)."""
    sock.sendall(struct.pack(">Q", len(payload)) + payload)


def _recv_exactly(sock, n, deadline):
    chunks, got = [], 0
    while got < n:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise Unanswered("no answer before the time limit")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            raise Unanswered("no answer before the time limit") from None
        except OSError as exc:
            raise Unanswered(f"the connection failed ({exc.strerror or exc})") from None
        if not chunk:
            raise Unanswered("the notebook's process ended")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock, deadline=None, limit=MAX_FRAME):
    """Receive one message sent by ``send_frame``; raises ``Unanswered`` on EOF, timeout or an oversized frame."""
    (size,) = struct.unpack(">Q", _recv_exactly(sock, 8, deadline))
    if size > limit:
        raise Unanswered(f"an answer of {size} bytes, above the limit of {limit}")
    return _recv_exactly(sock, size, deadline)


# -- the learner side: encode an answer as plain data ------------------------------------------------------------

def _describe(obj):
    cls = type(obj)
    mro = [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    name = getattr(obj, "__name__", None)
    return {"type": cls.__name__, "mro": mro[:50], "name": name if isinstance(name, str) else None,
            "callable": callable(obj)}


def encode(obj, handles, depth=0):
    """``obj`` as JSON-ready plain data; objects that are not plain data are kept in ``handles`` (id -> object).

    Tensors (any dtype of ``_DTYPES``, any device, any layout) become ``{"tensor": {dtype, shape,
    requires_grad, data}}`` with the raw bytes of a contiguous CPU copy in base64; tuples and lists
    keep their kind; non-finite floats are spelled out. Raises ``ValueError`` for an answer nested
    deeper than ``MAX_DEPTH`` or with more than ``MAX_ITEMS`` items in one list.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"an answer nested more than {MAX_DEPTH} deep")
    if obj is None or isinstance(obj, (bool, int, float, str)) and type(obj) in (bool, int, float, str):
        if type(obj) is float and not math.isfinite(obj):
            return {"float": repr(obj)}
        if type(obj) is int and abs(obj) > 2 ** 63:
            return {"float": repr(float(obj))}
        return obj
    if isinstance(obj, torch.Tensor):
        t = torch.Tensor.detach(obj).to("cpu").contiguous()
        t = t.resolve_conj().resolve_neg() if t.is_complex() else t
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() and t.dtype != torch.bool else \
            t.to(torch.uint8).numpy().tobytes()
        return {"tensor": {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                           "requires_grad": bool(obj.requires_grad),
                           "data": base64.b64encode(data).decode("ascii")}}
    if type(obj) in (tuple, list):
        if len(obj) > MAX_ITEMS:
            raise ValueError(f"an answer with more than {MAX_ITEMS} items")
        return {type(obj).__name__: [encode(x, handles, depth + 1) for x in obj]}
    if isinstance(obj, torch.Size):
        return {"tuple": [int(x) for x in obj]}
    key = len(handles) + 1
    handles[key] = obj
    return {"handle": key, **_describe(obj)}


# -- the grader side: decode an answer, strictly --------------------------------------------------------------

class Malformed(ValueError):
    """An answer that is not what ``encode`` writes."""


def _tensor(spec):
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "requires_grad", "data"}:
        raise Malformed("a tensor without dtype, shape and data")
    dtype = _DTYPES.get(spec["dtype"]) if isinstance(spec["dtype"], str) else None
    shape = spec["shape"]
    if dtype is None:
        raise Malformed(f"unknown dtype {str(spec['dtype'])[:40]!r}")
    if not (isinstance(shape, list) and len(shape) <= 16 and all(type(n) is int and 0 <= n < 2 ** 40 for n in shape)):
        raise Malformed("a tensor shape that is not a list of sizes")
    if not isinstance(spec["data"], str):
        raise Malformed("tensor data that is not text")
    data = base64.b64decode(spec["data"].encode("ascii"), validate=True)
    numel = math.prod(shape)
    size = numel * (1 if dtype == torch.bool else torch.empty((), dtype=dtype).element_size())
    if len(data) != size:
        raise Malformed(f"{len(data)} bytes of data for {numel} elements of {dtype}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) != 0
    else:
        flat = torch.frombuffer(bytearray(data), dtype=dtype).clone()
    return flat.reshape(shape)


def decode(data, connection=None, depth=0):
    """The value ``encode`` wrote: tensors as exact ``torch.Tensor``, handles as ``Remote``.

    Strict: only the forms ``encode`` writes are accepted, a tensor's byte count must equal its shape
    times its dtype's size, and its dtype must be one of ``_DTYPES``. Raises ``Malformed`` otherwise.
    """
    if depth > MAX_DEPTH + 1:
        raise Malformed("nested too deep")
    if data is None or type(data) in (bool, int, float, str):
        if type(data) is str and len(data) > MAX_TEXT:
            return data[:MAX_TEXT] + " ..."
        return data
    if type(data) is not dict or len(data) < 1:
        raise Malformed(f"a {type(data).__name__} where a value was expected")
    if "tensor" in data and len(data) == 1:
        return _tensor(data["tensor"])
    if len(data) == 1 and ("tuple" in data or "list" in data):
        items = data.get("tuple", data.get("list"))
        if type(items) is not list or len(items) > MAX_ITEMS:
            raise Malformed("a sequence that is not a list")
        values = [decode(x, connection, depth + 1) for x in items]
        return tuple(values) if "tuple" in data else values
    if len(data) == 1 and "float" in data and isinstance(data["float"], str) and len(data["float"]) < 40:
        try:
            return float(data["float"])
        except ValueError:
            raise Malformed("a float that is not a number") from None
    if "handle" in data and type(data["handle"]) is int and connection is not None:
        return Remote(connection, data["handle"], data)
    raise Malformed("an object of unknown form")


# -- the grader side: handles and the connection ------------------------------------------------------------

def _text(value, keep=200):
    return value[:keep] if isinstance(value, str) else None


class Remote:
    """A learner object that stays on the learner side: call it, read its attributes, differentiate through it.

    ``type_name``, ``mro`` (the qualified names of its classes) and ``__name__`` are what the learner side
    reported: good for messages and for choosing a path in a check, never for deciding a score.
    """

    def __init__(self, connection, key, info):
        self._connection, self._key = connection, key
        self.type_name = _text(info.get("type"), 100) or "object"
        self.mro = tuple(m[:200] for m in info.get("mro", []) if isinstance(m, str))[:50] \
            if isinstance(info.get("mro"), list) else ()
        self.__name__ = _text(info.get("name"), 100) or self.type_name
        self._callable = info.get("callable") is True

    def __repr__(self):
        return f"<{self.type_name} in the notebook>"

    def __call__(self, *args, **kwargs):
        return self.call(args, kwargs)["result"]

    def __getattr__(self, name):
        if name.startswith("__") or name.startswith("_Remote"):
            raise AttributeError(name)
        return self._connection.request("getattr", self._key, {"name": name})["result"]

    def is_a(self, cls):
        """Whether the learner side reported ``cls`` among the object's classes."""
        return f"{cls.__module__}.{cls.__qualname__}" in self.mro

    def call(self, args, kwargs=None, rules=(), wrt=(), pick=(), weight=None):
        """Call the object with ``args``; the answer's ``result``, ``hit`` (a forbidden call) and ``grads``.

        With ``wrt`` (argument positions, or attribute names of the object: parameters), the learner side
        also returns the gradients of ``sum(result[pick] * weight)`` with respect to them (None where there
        is none); see ``checks.core.call_learner_grad``.
        """
        return self._connection.request("call", self._key, {
            "args": tuple(args), "kwargs": dict(kwargs or {}), "rules": [label for label, _ in rules],
            "wrt": tuple(wrt), "pick": tuple(pick), "weight": weight})


def callable_object(obj):
    """``callable(obj)``, as the learner side reported it for a ``Remote``."""
    return obj._callable if isinstance(obj, Remote) else callable(obj)


def is_instance(obj, cls):
    """``isinstance(obj, cls)``, also for a ``Remote`` (by the class names its side reported)."""
    return obj.is_a(cls) if isinstance(obj, Remote) else isinstance(obj, cls)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("remote", obj._key) if isinstance(obj, Remote) else None


class Connection:
    """The grader side's end of the socket. ``request`` raises ``LearnerError``, ``Unanswered``."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.closed, self.reason = sock, deadline, False, ""

    def close(self, reason=""):
        if not self.closed:
            self.closed, self.reason = True, reason
            try:
                self.sock.close()
            except OSError:
                pass

    def receive(self):
        """One decoded answer (a dict). Closes the connection when no usable answer came."""
        if self.closed:
            raise Unanswered(self.reason or "the connection is closed")
        try:
            frame = recv_frame(self.sock, self.deadline)
        except Unanswered as exc:
            self.close(str(exc))
            raise
        try:
            answer = json.loads(frame.decode("utf-8"))
        except (ValueError, RecursionError, UnicodeDecodeError):
            self.close("malformed answer")
            raise Unanswered("the notebook's process sent a malformed answer") from None
        if type(answer) is not dict:
            self.close("malformed answer")
            raise Unanswered("the notebook's process sent a malformed answer")
        return answer

    def request(self, op, key, payload):
        """Send one request; return ``{"result": ..., "hit": label or None, "grads": [...]}`` decoded."""
        if self.closed:
            raise Unanswered(self.reason or "the connection is closed")
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
            (op, key, payload, torch.get_rng_state(), torch.is_grad_enabled()))
        try:
            send_frame(self.sock, buffer.getvalue())
        except OSError as exc:
            self.close(f"the notebook's process ended ({exc.strerror or exc})")
            raise Unanswered(self.reason) from None
        answer = self.receive()
        if "error" in answer:
            error = answer["error"] if type(answer["error"]) is dict else {}
            type_name = _text(error.get("type"), 100) or "Exception"
            message = _text(error.get("message"), 2000) or ""
            exc = _EXCEPTIONS[type_name](message) if type_name in _EXCEPTIONS and type_name != "KeyError" else \
                LearnerError(type_name, message)
            exc.hit = _text(answer.get("hit"), 200)
            raise exc
        try:
            result = decode(answer.get("result"), self)
            grads = answer.get("grads", [])
            grads = [None if g is None else decode(g) for g in grads] if type(grads) is list else []
            if any(g is not None and not isinstance(g, torch.Tensor) for g in grads):
                raise Malformed("a gradient that is not a tensor")
            state = decode(answer.get("rng")) if answer.get("rng") is not None else None
        except (Malformed, ValueError, TypeError, RecursionError) as exc:
            raise LearnerError("MalformedAnswer", f"the answer could not be read ({exc})") from None
        if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.shape == torch.get_rng_state().shape:
            try:
                torch.set_rng_state(state)                 # the global generator moves on as the learner's did
            except RuntimeError:
                pass
        hit = _text(answer.get("hit"), 200)
        return {"result": result, "hit": hit, "grads": grads}


class Environment:
    """What otter's test functions read by name (``env.get(name)``): the notebook's values for one question,
    as ``Remote`` handles or plain data."""

    def __init__(self, connection, question):
        self.connection, self.question = connection, question

    def get(self, name, default=None):
        try:
            value = self.connection.request("lookup", 0, {"question": self.question, "name": name})["result"]
        except (Unanswered, LearnerError, NameError):
            return default
        return value


# -- the learner side: answer requests ----------------------------------------------------------------------

class _Unpickler(pickle.Unpickler):
    def __init__(self, file, handles):
        super().__init__(file)
        self.handles = handles

    def persistent_load(self, pid):
        return self.handles[pid[1]]


def call_traced(target, args, kwargs=None, rules=(), wrt=(), pick=(), weight=None):
    """``target(*args, **kwargs)`` under the tripwire; with ``wrt``, also gradients: what both sides call.

    Returns ``{"result", "hit", "grads"}``: ``hit`` the label of the first forbidden call (see
    ``tripwire.watch``), ``grads`` one tensor per ``wrt`` entry (an argument position, passed as a
    fresh leaf, or an attribute name of ``target``) of ``sum(result[pick] * weight)``, None where the
    result is not differentiable in it. An exception of ``target`` propagates with ``hit`` set on it.
    """
    from . import tripwire

    args, leaves = list(args), []
    for w in wrt:
        if isinstance(w, int):
            args[w] = torch.Tensor.detach(args[w]).clone().requires_grad_(True)
            leaves.append(args[w])
        else:
            leaves.append(getattr(target, w))
    watch = tripwire.watch(rules)
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled() or bool(leaves)), watch:
            result = target(*args, **(kwargs or {}))
    except Exception as exc:
        try:
            exc.hit = watch.hit
        except AttributeError:
            pass
        raise
    grads = [None] * len(leaves)
    try:
        y = result
        for i in pick:
            y = y[i]
    except Exception:                                        # not the tuple the check expects: no gradient
        y = None
    if isinstance(y, torch.Tensor) and y.requires_grad:
        loss = (y * weight).sum() if weight is not None else y.sum()
        wanted = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
        found = torch.autograd.grad(loss, [leaves[i] for i in wanted], allow_unused=True) if wanted else []
        for i, g in zip(wanted, found):
            grads[i] = g
    return {"result": result, "hit": watch.hit, "grads": grads}


def _error(exc, hit=None):
    try:
        message = str(exc)
    except Exception:
        message = "(its message could not be read)"
    return {"error": {"type": type(exc).__name__, "message": message[:2000]}, "hit": hit}


def _answer(request, handles, snapshots, rule_book):
    op, key, payload, rng_state, grad_enabled = request
    if op == "lookup":
        env = snapshots.get(payload["question"], snapshots.get(None, {}))
        if payload["name"] not in env:
            raise NameError(f"name {payload['name']!r} is not defined in the notebook")
        return {"result": encode(env[payload["name"]], handles)}
    target = handles[key]
    if op == "getattr":
        return {"result": encode(getattr(target, payload["name"]), handles)}
    if op != "call":
        raise ValueError(f"unknown request {op!r}")
    torch.set_rng_state(rng_state)
    rules = [rule for label in payload["rules"] for rule in rule_book.get(label, [])]
    try:
        with torch.set_grad_enabled(grad_enabled):
            done = call_traced(target, payload["args"], payload["kwargs"], rules, payload["wrt"], payload["pick"],
                               payload["weight"])
    except Exception as exc:                                    # the learner's function raised: that is the answer
        return _error(exc, getattr(exc, "hit", None))
    answer = {"hit": done["hit"], "result": encode(done["result"], handles), "rng": encode(torch.get_rng_state(), {})}
    if payload["wrt"]:
        answer["grads"] = [None if g is None else encode(g, {}) for g in done["grads"]]
    return answer


def rule_book():
    """Every forbidden rule of every check, by label: how the learner side turns labels back into rules."""
    import attn_course.checks as checks

    book = {}
    for name in dir(checks):
        for label, fn in getattr(getattr(checks, name), "forbidden", ()):
            book.setdefault(label, []).append((label, fn))
    return book


def serve(sock, snapshots):
    """Answer the grader side's requests until it closes the socket (the learner side's main loop).

    ``snapshots`` maps a question's name to the notebook's variables when it was checked (``None``: the
    variables at the end, for the questions never checked).
    """
    handles, book = {}, rule_book()
    while True:
        try:
            frame = recv_frame(sock)
        except Unanswered:
            return
        try:
            request = _Unpickler(io.BytesIO(frame), handles).load()
            answer = _answer(request, handles, snapshots, book)
            text = json.dumps(answer)
        except Exception as exc:                                # a request the learner's objects could not answer
            text = json.dumps(_error(exc))
        try:
            send_frame(sock, text.encode("utf-8"))
        except OSError:
            return


def type_name(obj):
    """``type(obj).__name__``, or the type the learner side reported for a ``Remote``."""
    return obj.type_name if isinstance(obj, Remote) else type(obj).__name__
