"""The progress page a person reads at ``/``: phase, per-task bars, saves, held deletions,
errors; auto-refreshed. Everything shown comes from :meth:`State.snapshot` (no secret), and
every value is escaped.

The badge at the top tells the truth in words and colour: green only while every save
succeeds and nothing waits; amber while the deletion guard holds deletions; red when the
last save failed. Held deletions are confirmed with a small form that asks for the token and
POSTs to ``confirm-deletions``: a relative URL, so the page works under any prefix a proxy
puts it behind. A daemon started without a token has no form (its POSTs are disabled): the
page says instead how the deletions are carried out. Unsaved changes count held deletions
apart: the next save does not take them."""

from __future__ import annotations

import html
import time

from ..wording import count, duration
from .state import human_bytes

REFRESH_SECONDS = 2
FORM_REFRESH_SECONDS = 60  # while the confirmation form is shown: time to type the token


TASK_LABELS = {"deploy": "Project restore", "clone": "Source clone", "autosave": "Autosave",
               "requested save": "Save on request (POST /save)", "final save": "Final save",
               "save unsaved work": "Saving earlier work"}
PHASE_TEXT = {
    "starting": "Starting up.",
    "locking": "Checking that nobody else has this project open.",
    "waiting-for-lock": "Someone else has this project open (named below). It starts here by "
                        "itself once they are done; nothing is copied or changed meanwhile.",
    "staging-in": "Copying the project onto this machine. The application starts when "
                  "this is done.",
    "ready": "Everything is in place.",
    "running": "The application can run. Your work is saved to primary storage regularly.",
    "staging-out": "Saving your work to primary storage one last time.",
    "released": "All work is saved and the project is free to be opened elsewhere.",
    "stopped": "Stopped before the project was ready; nothing needed saving.",
    "failed": "Something went wrong; see the errors below and the log.",
    "lock-lost": "Another deployment took this project: nothing is saved any more.",
}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  background:#f4f6f9;color:#1c2230}
main{max-width:62rem;margin:0 auto;padding:1.5rem 1rem}
h1{font-size:1.5rem;margin:0}h2{font-size:1.05rem;margin:0 0 .8rem}
.sub{color:#596275;margin:.2rem 0 1.2rem;word-break:break-all}
section{background:#fff;border:1px solid #dfe3ea;border-radius:.6rem;padding:1rem 1.2rem;
  margin-bottom:1rem}
.phase{display:inline-block;padding:.3rem .8rem;border-radius:1rem;font-weight:700;
  background:#e2e7f0;margin-right:.6rem}
.good{background:#d5f3de;color:#15612f}.busy{background:#fff1c7;color:#6d4f00}
.bad{background:#fcdcdc;color:#8c1717}.warn{background:#ffe2b8;color:#7a3d00}
form{margin:.6rem 0 0}input{font:inherit;padding:.25rem .4rem;margin-right:.4rem}
button{font:inherit;padding:.25rem .8rem;border-radius:.4rem;border:1px solid #b35c00;
  background:#fff4e5;color:#7a3d00;cursor:pointer}
.task{margin-bottom:1rem}.task:last-child{margin-bottom:0}
.row{display:flex;justify-content:space-between;gap:1rem;flex-wrap:wrap}
.name{font-weight:600}
.bar{height:1.2rem;background:#e7ebf1;border-radius:.6rem;overflow:hidden;margin:.35rem 0}
.fill{height:100%;background:#3474e0}.fill.done{background:#25a25a}
.facts{color:#4a5366;font-size:.92rem}
table{border-collapse:collapse}td{padding:.2rem 1.2rem .2rem 0;vertical-align:top}
td:first-child{color:#596275}
.err{color:#8c1717}.muted{color:#6a7386}footer{color:#6a7386;font-size:.85rem}
"""


def e(value) -> str:
    return html.escape("" if value is None else str(value))


def render_page(s: dict, *, has_token: bool = True) -> str:
    """The progress page; every value from the state goes through html.escape.
    ``has_token``: the daemon has an API token, so held deletions are confirmed with a form."""
    badge, tone = _badge(s)
    form = bool(s.get("held_deletions")) and has_token
    refresh = FORM_REFRESH_SECONDS if form else REFRESH_SECONDS
    health = "" if s["health"] == "ok" else \
        f'<p class="err">Health: {e(s["health"])} — {e(s["health_reason"])}</p>'
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>spaceport · {e(badge)}</title><style>{STYLE}</style></head>
<body><main>
<h1>spaceport</h1>
<div class="sub">{e(s["primary"])} → {e(s["work"])}{_source_line(s)}</div>
<section><span class="phase {tone}">{e(badge)}</span>{e(_phase_text(s))}
<p class="muted">{e(s["message"])} · since {e(_ago(s["now"] - s["phase_since"]))}</p>{health}
</section>
<section><h2>Progress</h2>{_source_progress(s)}{_tasks(s)}</section>
{_held(s, has_token)}<section><h2>Saves</h2>{_saves(s)}{_unsaved(s)}{_trashed(s)}</section>
<section><h2>Errors</h2>{_errors(s)}</section>
<footer>Updated {e(_clock(s["now"]))} · refreshes every {refresh} s · spaceport
{e(s["version"])}{_deployment(s)}</footer>
</main></body></html>
"""
    return body


def _badge(s: dict) -> tuple[str, str]:
    """The words and colour of the badge: what a person must know first."""
    phase = s["phase"]
    tone = {"ready": "good", "running": "good", "released": "good", "failed": "bad",
            "lock-lost": "bad", "stopped": "bad"}.get(phase, "busy")
    if phase not in ("ready", "running", "staging-out"):
        return phase, tone
    last = s.get("last_save")
    if last and not last["ok"]:
        return f"{phase} · last save failed", "bad"
    if s.get("held_deletions"):
        return f"{phase} · deletions held", "warn"
    return phase, tone


def _phase_text(s: dict) -> str:
    last = s.get("last_save")
    if s["phase"] == "running" and last and not last["ok"]:
        return ("The application can run, but the last save FAILED: your latest work is not "
                "on primary storage yet. Saves are tried again; the reason is below.")
    if s["phase"] == "running" and s.get("held_deletions"):
        return ("The application can run. Your work is saved to primary storage regularly, "
                "except the deletions held below: they wait for your confirmation.")
    text = PHASE_TEXT.get(s["phase"], "")
    if s["phase"] == "staging-in" and s.get("source"):
        text = text.replace("the project onto", "the project and the source data onto")
    return text


def _source_line(s: dict) -> str:
    if not s.get("source"):
        return ""
    return f'<br>source {e(s["source"])} → {e(s["source_work"])} (read-only copy)'


SOURCE_STAGES = {"waiting": "waiting to start", "needed-first": "copying first the files "
                 "the project links to", "listing": "listing the source", "copying": "copying",
                 "complete": "complete", "stopped": "stopped (continues at the next start)",
                 "failed": "failed (see Errors)"}


def _source_progress(s: dict) -> str:
    """One line: the source's clone, apart from the project (it may go on behind a ready
    desktop)."""
    p = s.get("source_progress")
    if not p:
        return ""
    text = SOURCE_STAGES.get(p["stage"], p["stage"])
    if p["first_files"]:
        text += f"; files the project links to: {p['first_done']} of {p['first_files']}"
    if p["files_missing"] is not None and not p["complete"]:
        text += (f"; still to come: {count(p['files_missing'], 'file')} "
                 f"({human_bytes(p['bytes_missing'] or 0)})")
    return f'<p class="muted" id="source-progress">Source data: {e(text)}</p>'


def _deployment(s: dict) -> str:
    if not s.get("deployment_id"):
        return ""
    return f' · deployment {e(s["deployment_id"][:8])}' + (" (resumed)" if s["resumed"] else "")


def _tasks(s: dict) -> str:
    if not s["tasks"]:
        return '<p class="muted">Nothing copied yet.</p>'
    parts = []
    for t in s["tasks"]:
        label = TASK_LABELS.get(t["name"], t["name"].capitalize())
        # Finished short of its files (a save that failed): not "done", and not green.
        short = t["finished"] is not None and t["files_done"] < t["files_total"]
        done = t["finished"] is not None and not short
        scanning = not done and not short and not t["bytes_total"] and not t["files_total"]
        if short:
            share = t["files_done"] / t["files_total"]
        elif done or scanning:
            share = 1.0 if done else 0.0
        elif t["bytes_total"]:
            share = t["bytes_done"] / t["bytes_total"]
        else:  # only empty files to copy
            share = t["files_done"] / t["files_total"]
        if scanning:
            state, facts = "listing files…", "finding out what to copy"
        else:
            state = "done" if done else ("stopped short" if short else f"{share:.0%}")
            facts = (f"{human_bytes(t['bytes_done'])} of {human_bytes(t['bytes_total'])} · "
                     f"{t['files_done']} of {t['files_total']} files · "
                     f"{human_bytes(t['rate'])}/s")
            if not done and not short and t.get("eta"):
                facts += f" · about {_ago(t['eta'])} left"
            if done:
                facts += f" · took {_ago(t['finished'] - t['started'])}"
        parts.append(
            f'<div class="task"><div class="row"><span class="name">{e(label)}</span>'
            f'<span>{e(state)}</span></div><div class="bar"><div class="fill'
            f'{" done" if done else ""}" style="width:{share * 100:.1f}%"></div></div>'
            f'<div class="facts">{e(facts)}</div></div>')
    return "".join(parts)


def _saves(s: dict) -> str:
    rows = []
    last = s["last_save"]
    if last:
        result = "succeeded" if last["ok"] else f"FAILED: {last.get('error', '')}"
        label = TASK_LABELS.get(last["task"], last["task"])
        what = f"{label} {_ago(s['now'] - last['time'])} ago, {result}"
        if last["ok"]:
            what += (f" ({count(last.get('uploaded', 0), 'file')}, "
                     f"{human_bytes(last.get('bytes', 0))} uploaded in {last['seconds']:.1f} s)")
        rows.append(("Last save", what))
    else:
        rows.append(("Last save", "none yet"))
    if s["last_successful_save"] and not (last and last["ok"]):
        rows.append(("Last good save", f"{_ago(s['now'] - s['last_successful_save'])} ago"))
    if s["next_save_in"] is not None:
        rows.append(("Next save", f"in {_ago(s['next_save_in'])}"))
    rows.append(("Saves", f"{s['saves']['ok']} succeeded, {s['saves']['failed']} failed; "
                          f"autosave every {_ago(s['interval'])}"))
    if s.get("last_clone"):
        c = s["last_clone"]
        rows.append(("Last clone", f"{_ago(s['now'] - c['time'])} ago, "
                                   + ("succeeded" if c["ok"] else "failed")))
    return "<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows) \
        + "</table>"


def _unsaved(s: dict) -> str:
    """Unsaved changes, count and size, from the daemon's last look at the working copy."""
    p = s.get("pending")
    if p is None or s.get("pending_at") is None:
        return ""
    seen = f"as seen {_ago(s['now'] - s['pending_at'])} ago"
    what = []
    if p["files_to_upload"]:
        what.append(f"{count(p['files_to_upload'], 'file')} to upload "
                    f"({human_bytes(p['bytes_to_upload'])})")
    if p.get("moves"):
        what.append(count(p["moves"], "move"))
    if p["new_dirs"]:
        what.append(count(p["new_dirs"], "new folder"))
    # The deletions the guard holds are among the look's deletions, but the next save does
    # not take them: counted apart. Any other deletion the guard weighs at that save.
    held = min((s.get("held_deletions") or {}).get("count", 0), p["entries_to_delete"])
    others = p["entries_to_delete"] - held
    if others:
        what.append(count(others, "deletion") if not held else
                    f"{count(others, 'other deletion')} (the deletion guard weighs them at the "
                    "next save)")
    if p["links_changed"]:
        what.append("links changed")
    if held:
        what.append(f"{count(held, 'deletion')} confirmed, for the save under way"
                    if _confirmed_now(s) else
                    f"{count(held, 'deletion')} held until you confirm them")
    if not what:
        return f'<p class="muted">Unsaved changes: none ({e(seen)}).</p>'
    last = ""
    if p.get("last_change_ns"):
        last = f"; last change {_ago(s['now'] - p['last_change_ns'] / 1e9)} ago"
    taken = "the next save takes them" if not held else \
        "the next save takes the rest" if len(what) > 1 else "nothing else is unsaved"
    return (f'<p>Unsaved changes: <b>{e(", ".join(what))}</b>{e(last)} '
            f'<span class="muted">({e(seen)}; {e(taken)})</span></p>')


def _trashed(s: dict) -> str:
    """What the last save moved to the trash on the primary, by name."""
    last = s.get("last_save") or {}
    if not last.get("deleted"):
        return ""
    names = "".join(f"<li>{e(p)}</li>" for p in last.get("trashed") or ())
    more = last["deleted"] - len(last.get("trashed") or ())
    return (f'<p>The last save moved {e(count(last["deleted"], "file"))} to the trash on '
            f'primary storage (batch {e(last.get("trash_batch"))}; <code>spaceport trash '
            f'restore</code> brings them back):</p><ul>{names}</ul>'
            + (f'<p class="muted">… and {e(more)} more</p>' if more > 0 else ""))


def _held(s: dict, has_token: bool) -> str:
    """Deletions the deletion guard holds, and special files not saved: a section only when
    there are any. With a token, a form confirms them; without, the page says what does."""
    parts = []
    held = s.get("held_deletions")
    if held:
        paths = "".join(f"<li>{e(p)}</li>" for p in held["sample"][:10])
        more = held["count"] - min(len(held["sample"]), 10)
        how = ('If they were deleted on purpose, confirm below with the daemon\'s token (or '
               '<code>POST confirm-deletions</code> with it); if not, bring them back into the '
               'working copy.') if has_token else \
            'If they were not deleted on purpose, bring them back into the working copy.'
        parts.append(
            f'<section><h2>Deletions held</h2><p class="err">{e(count(held["count"], "deletion"))}'
            f' held since {e(held.get("since"))}: the working copy looks wrong: '
            f'{e(held["reason"])}.</p><p>Everything else is saved; these files stay on primary '
            f'storage. {how}</p><ul>{paths}</ul>'
            + (f'<p class="muted">… and {e(more)} more</p>' if more > 0 else "")
            + (_confirm_form(s) if has_token else _without_token(s)) + "</section>")
    special = s.get("special") or []
    if special:
        items = "".join(f"<li>{e(p)}</li>" for p in special[:20])
        parts.append(f'<section><h2>Not saved</h2><p>{e(count(len(special), "special file"))} '
                     f'(fifo, socket, device) cannot be saved:</p><ul>{items}</ul></section>')
    return "".join(parts)


def _confirm_form(s: dict) -> str:
    """A form that asks for the token and posts it to ``confirm-deletions`` (relative)."""
    confirmed = s.get("confirmed")
    note = ""
    if _confirmed_now(s):
        note = (f'<p class="muted">{e(count(confirmed["count"], "deletion"))} confirmed '
                f'{e(_ago(s["now"] - confirmed["time"]))} ago: the save under way carries '
                'them out.</p>')
    return (note + '<form method="post" action="confirm-deletions">'
            '<label>Token <input type="password" name="token" autocomplete="off" required>'
            '</label><button type="submit">Confirm these deletions</button></form>')


def _confirmed_now(s: dict) -> bool:
    """Held deletions were confirmed since the last save ended: the next save takes them."""
    confirmed = s.get("confirmed")
    return bool(confirmed) and confirmed["time"] >= (s.get("last_save") or {}).get("time", 0)


def _without_token(s: dict) -> str:
    """No token, no form: what carries held deletions out instead, as it is. Nothing confirms
    them while this daemon runs (its POSTs are disabled; a command beside it is refused); once
    stopped it has given its working copy up, so a new deployment restores the files first."""
    work, primary = e(s["work"]), e(s["primary"])
    return ('<p id="confirm-how">This daemon was started without <code>--token</code>, so '
            'they cannot be confirmed while it runs: there is no form here, and a command '
            'beside a running daemon is refused. To carry them out, stop the daemon (the files '
            'stay on primary storage, recorded in its journal) and start it again with '
            '<code>--token</code> or <code>--token-file</code>: it restores the files, so '
            'delete them again, then confirm them on its page when it holds them. Or, with the '
            f'daemon stopped: <code>spaceport deploy {primary} {work}</code>, delete them '
            f'again, <code>spaceport save --allow-mass-delete {work}</code>.</p>')


def _errors(s: dict) -> str:
    if not s["errors"]:
        return '<p class="muted">None.</p>'
    items = "".join(f'<li><span class="muted">{e(_clock(x["time"]))} {e(x["where"])}:</span> '
                    f'<span class="err">{e(x["message"])}</span></li>' for x in s["errors"][:10])
    return f"<ul>{items}</ul>"


def _ago(seconds: float | None) -> str:
    return duration(seconds)  # the same units as the daemon's messages and log


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))
