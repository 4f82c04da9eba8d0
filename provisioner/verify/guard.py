"""Each site verified in isolation, with a verdict within its deadline.

``verify_guarded`` runs ``verify_target`` for one site in a task of its own and always
returns a result: whatever the site makes the verifier raise becomes that site's
``error`` check with a one-line reason (the exception's type and a bounded message);
a site that has no verdict when its deadline (two step timeouts by default; waiting for
a slot on a shared server not counted) passes is stopped, and its reason names the step
that was running. A site with an ``error`` check (a crash too: some come from the
event loop, not the site) is verified once more if enough of its deadline is left,
never beyond it; a stopped site is not. Cancellation (Ctrl-C) is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from .health import SiteStopped, SiteWatch, Stop
from .model import CHECKS, NO_CERT, WEB_CHECKS, AgencyResult, CheckResult, Status, result, skipped
from .verifier import Target, VerifyContext, verify_target

LOG = logging.getLogger(__name__)
MAX_REASON = 200  # characters of an exception's message kept in a reason
DNS_CHECKS = tuple(c for c in CHECKS if c.startswith("dns."))
STEPS = {  # the verifier's functions, innermost first wins: what the site was doing
    "_check_dns": "looking up the name",
    "check_redirect": "checking the http:// redirect",
    "get_following": "reading the home page",
    "read_publication": "reading the publication pages",
}


async def verify_guarded(target: Target, ctx: VerifyContext) -> tuple[AgencyResult, int]:
    """The site's result and how many attempts it took (1 or 2); never raises but for
    cancellation."""
    site = SiteWatch(port=port_of(target), refuse_inward=is_external_agency(target),
                     budget=ctx.deadline, describe_step=running_step)
    site.arm()
    try:
        first = await _attempt(target, ctx, site)
        if not first.has_errors or site.stop is not None \
                or site.remaining() <= ctx.timeout / 2:
            return first, 1
        again = await _attempt(target, ctx.fresh(), site)
        return (first if site.stop is not None else again), 2
    finally:
        site.disarm()


async def _attempt(target: Target, ctx: VerifyContext, site: SiteWatch) -> AgencyResult:
    task = asyncio.get_running_loop().create_task(verify_target(target, ctx))
    site.done = None
    ctx.gate.watch(task, site)
    try:
        return await task
    except asyncio.CancelledError:
        if site.stop is None or asyncio.current_task().cancelling():
            raise
        return stopped_result(target, ctx, site.stop, site.done or ())
    except SiteStopped as stopped:
        site.stop = stopped.stop
        return stopped_result(target, ctx, stopped.stop, site.done or ())
    except Exception as exc:  # noqa: BLE001 - the point: one site never aborts the run
        LOG.debug("verifying %s raised", target.url, exc_info=exc)  # for whoever debugs it
        return stopped_result(target, ctx, Stop(Status.ERROR, crash_reason(exc)),
                              site.done or ())
    finally:
        ctx.gate.forget(task)


def stopped_result(target: Target, ctx: VerifyContext, stop: Stop,
                   done: tuple[CheckResult, ...] | list[CheckResult] = ()) -> AgencyResult:
    """A site whose verification did not end: the checks it had made kept, the DNS and
    web checks it had not made given the stop's status and reason, the publication
    skipped."""
    made = {c.id: c for c in done}
    checks = [made.get(c) or result(c, stop.status, stop.reason)
              for c in (*DNS_CHECKS, *WEB_CHECKS)]
    checks += skipped([f"publication.{i}" for i in ctx.rules.ids],
                      f"not read: the verification stopped ({stop.reason})")
    return AgencyResult(target.agency, target.url, tuple(checks), ctx.rules.nothing_published,
                        NO_CERT)


def crash_reason(exc: BaseException) -> str:
    """One line: what the verifier raised, its message bounded and without controls."""
    message = " ".join(str(exc).split())
    if len(message) > MAX_REASON:
        message = message[:MAX_REASON] + "..."
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return "verification failed: " + "".join(ch if ch.isprintable() else "?" for ch in text)


def running_step(task: asyncio.Task) -> str:
    """What a site's task is awaiting, in words: the innermost verifier step on its
    coroutine chain (or the innermost function outside asyncio when none is known)."""
    names, ours = [], []
    frame = task.get_coro()
    while frame is not None:
        code = getattr(frame, "cr_code", None) or getattr(frame, "gi_code", None)
        if code is None:
            break
        names.append(code.co_name)
        running = getattr(frame, "cr_frame", None) or getattr(frame, "gi_frame", None)
        if running is not None and not running.f_globals.get("__name__", "").startswith("asyncio"):
            ours.append(code.co_name)
        frame = getattr(frame, "cr_await", None) or getattr(frame, "gi_yieldfrom", None)
    known = [STEPS[n] for n in names if n in STEPS]
    return known[-1] if known else f"in {ours[-1]}" if ours else "starting"


def port_of(target: Target) -> int:
    """The port the site's checks use; 0 for a URL the verifier itself will fail on (the
    guard must not)."""
    try:
        parts = urlsplit(target.url)
        return parts.port or (443 if parts.scheme == "https" else 80)
    except (ValueError, TypeError, AttributeError):
        return 0


def is_external_agency(target: Target) -> bool:
    """An agency hosted elsewhere: its URL comes from the inventory, not the operator's
    command line, and a hosted agency always has an expected DNS answer."""
    return target.agency is not None and target.expected is None
