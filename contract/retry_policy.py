"""The retry policy of object-store requests (S3), and the count of retries: what
contract.storage gives every S3 file system it opens.

For S3 (s3://, s3a://) each request gets botocore's "standard" retry mode: an answer
500/502/503/504, a throttling answer (SlowDown), a connection error or a read timeout is retried
with exponential backoff and jitter (the n-th wait drawn from [0, 2**(n-1)] s, at most 20 s;
botocore's retry quota stops retrying when most requests of a client fail), up to
`IMAGEDREAM_STORE_ATTEMPTS` attempts in all (default 5; the tests set 3), with a connect timeout of
5 s and a read timeout of 15 s. On top of that s3fs runs a call again once (`S3FS_TRIES` = 2 tries,
s3fs's `retries`, default 5) when what failed was a read timeout or a dropped connection botocore
gave up on, a SlowDown, or a body cut while it streamed (which botocore cannot retry); a GET is two
such calls, one inside the other (the request, and the request with the body read). So a
permanently failing request costs `IMAGEDREAM_STORE_ATTEMPTS` requests for a 500 answer, up to
twice that for a SlowDown or a late answer, and four times that for a GET that never answers in
time. Measured on a local server (moto) failing one object always, defaults against the tests' 3
attempts: a 500 costs 5 requests and 4 to 8 s (at most 15 s of waits) against 3 requests and 1 to 2
s; a SlowDown on GET 10 requests and 16 s against 6 and 3 s; a GET that never answers 20 requests
against 12, each waiting for the read timeout: about 5 minutes with the default 15 s (20 x 15 s +
waits). Before these settings (botocore's legacy mode, s3fs's 5 tries) a SlowDown cost 25 requests
and 28 s, a GET that never answers up to 125 requests (5 x 5 x 5, computed).
What the user configured wins where it is set: `config_kwargs` in fsspec's s3 configuration
(`FSSPEC_S3='{"config_kwargs": {"retries": {"max_attempts": 2}, "read_timeout": 60}}'`) is
merged over these defaults, key by key (retries too), and botocore's `AWS_RETRY_MODE` /
`AWS_MAX_ATTEMPTS` replace the mode / the attempts (~/.aws/config's do not: an explicit
setting wins over that file). gs:// and other backends retry as their packages do.

`store_retries()` counts the requests this process retried (botocore's retries, each attempt
after a request's first; s3fs's outer tries are not counted: s3fs offers no hook that sees
them). The count is per process: a DataLoader worker, a Ray task or another node counts its own,
and reports it to whoever sums them (training.data carries it in the stream's progress).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec

S3_PROTOCOLS = ("s3", "s3a")
STORE_ATTEMPTS_ENV = "IMAGEDREAM_STORE_ATTEMPTS"  # attempts per S3 request, the first included
DEFAULT_STORE_ATTEMPTS = 5
S3FS_TRIES = 2  # s3fs's own tries of a call whose transport failed (its `retries`; default 5)
_S3_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 15}  # seconds (s3fs's own defaults)
_RETRY_HOOK = "contract.storage.count_retry"  # the unique_id: registered once per client


def retry_and_count(fs: Any) -> None:
    """Bound s3fs's own tries of `fs` and count botocore's retries of its requests."""
    fs.retries = S3FS_TRIES  # an attribute, no option (fsspec's instance cache keeps it)
    # The hook on the client, and on the session for clients made later (botocore copies the
    # session's hooks into each new client); unique_id: registering again does nothing
    for events in (fs.s3.meta.events, fs.session):
        events.register("request-created.s3", count_retry, unique_id=_RETRY_HOOK)


def store_attempts() -> int:
    """Attempts per S3 request, the first included ($IMAGEDREAM_STORE_ATTEMPTS, default 5)."""
    text = os.environ.get(STORE_ATTEMPTS_ENV, "").strip()
    if not text:
        return DEFAULT_STORE_ATTEMPTS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{STORE_ATTEMPTS_ENV}={text!r}: expected a whole number of attempts >= 1")
    return int(text)


def s3_config_kwargs() -> dict[str, Any]:
    """botocore's Config for S3: the retry policy and timeouts above, with
    what the user set in fsspec's configuration merged over them key by key (passing
    config_kwargs explicitly would otherwise replace theirs: fsspec merges its configuration
    shallowly, explicit arguments win)."""
    theirs: dict[str, Any] = {}
    for protocol in S3_PROTOCOLS:  # in fsspec's order: a later protocol's setting replaces
        theirs = dict(fsspec.config.conf.get(protocol, {}).get("config_kwargs", theirs))
    their_retries = dict(theirs.pop("retries", None) or {})
    retries: dict[str, Any] = {"mode": "standard", "total_max_attempts": store_attempts()}
    if "AWS_RETRY_MODE" in os.environ:
        del retries["mode"]
    their_attempts = their_retries.keys() & {"max_attempts", "total_max_attempts"}
    if "AWS_MAX_ATTEMPTS" in os.environ or their_attempts:
        del retries["total_max_attempts"]
    return {**_S3_TIMEOUTS, **theirs, "retries": {**retries, **their_retries}}


_retries = 0
_retries_lock = threading.Lock()


def count_retry(request: Any = None, **_: Any) -> None:
    """botocore's request-created hook: a request whose attempt number is above 1 is a retry."""
    global _retries
    context = getattr(request, "context", None) or {}
    if context.get("retries", {}).get("attempt", 1) > 1:
        with _retries_lock:
            _retries += 1


def store_retries() -> int:
    """Object-store requests this process has retried so far (botocore's retries; see the
    module docstring). Per process: other processes (DataLoader workers, Ray tasks and actors,
    other nodes) count their own and must report them; a forked child starts from its parent's
    count, so take differences."""
    return _retries
