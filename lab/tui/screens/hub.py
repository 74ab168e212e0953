"""Hub: find GGUF models on the Hugging Face Hub, see what each quant needs before downloading,
and download them into the Library.

Before any search the table lists the curated catalog (``models/catalog.toml``) as "Suggested",
which needs no network. Every Hub call (search, file list with one header read by Range
request, download) runs in a thread worker and answers with a message; a download reports
progress at most four times a second and stops at the next chunk when cancelled, keeping the
partial file for a later resume. Downloads run one at a time, in the order queued. A finished
download is registered in the store with its source repo and the Library is rescanned at once.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, ListItem, ListView, Static

from lab import catalog, hub
from lab.errors import Cancelled, HubError, LabError
from lab.tui import format as fmt
from lab.tui.messages import HubDownloadFinished, HubDownloadProgress, HubFilesLoaded, HubSearched
from lab.tui.screens.base import LabScreen
from lab.tui.widgets.gauge import Gauge
from lab.tui.widgets.table import LabTable

SEARCH_LIMIT = 50
PROGRESS_INTERVAL_S = 0.25  # at most ~4 UI updates a second per download

SUGGESTED_COLUMNS = [("name", "name"), ("repo", "repo"), ("params", "params"), ("license", "license"),
                     ("note", "why")]
HIT_COLUMNS = [("repo", "repo"), ("downloads", "downloads"), ("likes", "likes"), ("updated", "updated"),
               ("params", "params"), ("arch", "arch")]
FILE_COLUMNS = [("file", "file"), ("quant", "quant"), ("header", "header"), ("parts", "parts"),
                ("size", "size"), ("ctx", "ctx"), ("est", "est. mem"), ("fits", "fits"), ("basis", "from")]
# Queue states that are over: the row stays as a record, the download can be queued again.
FINISHED = ("done", "cancelled", "failed")


def sentence(text: str) -> str:
    """A domain message as one sentence (the domain writes them without the full stop)."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def fits_text(value: bool | None) -> str:
    """The fit flag in words, as ``rightsizer models files`` writes it."""
    return fmt.NA if value is None else ("yes" if value else "NO")


def progress_text(p: hub.DownloadProgress | None, live: bool = True) -> str:
    """``45%  1.80 MiB / 4.00 MiB  3.10 MiB/s  ETA 2s``; speed and ETA n/a until measured, and
    left out once the download has ended (``live`` False)."""
    if p is None:
        return ""
    text = f"{p.fraction * 100:3.0f}%  {fmt.human_bytes(p.done_bytes)} / {fmt.human_bytes(p.total_bytes)}"
    if not live:
        return text
    speed = f"{fmt.human_bytes(p.speed_bps)}/s" if p.speed_bps else fmt.NA
    part = f"  part {p.part}/{p.n_parts}" if p.n_parts > 1 else ""
    return f"{text}  {speed}  ETA {fmt.seconds(p.eta_s)}{part}"


@dataclass
class Download:
    """One row of the download queue (UI state; the transfer itself is ``lab.hub.pull``)."""

    key: str  # the pull spec, which also keys the row
    repo_id: str
    label: str
    item_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued, downloading, verifying, cancelling, done, cancelled, failed
    progress: hub.DownloadProgress | None = None
    note: str | None = None
    gauge: Gauge | None = None  # the row's widgets
    note_widget: Static | None = None


class HubScreen(LabScreen):
    MODE = "hub"
    HELP = ("Search GGUF repositories on the Hugging Face Hub (most downloaded first); with the "
            "search box empty the curated catalog is listed as Suggested. Opening a repo lists every "
            "quant with its size and the memory it needs at the app's context, read from one GGUF "
            "header by an HTTP Range request, not a download. Downloads run one at a time, are "
            "verified by sha256 and appear in the Library at once; c cancels the running one (or, with "
            "the queue focused by tab, the highlighted one), keeping its partial file to resume when "
            "downloaded again. Offline, the Suggested list stays.")

    BINDINGS = [
        Binding("slash", "focus_search", "Search", key_display="/"),
        Binding("o", "open", "Open repo"),
        Binding("d", "download", "Download"),
        Binding("c", "cancel", "Cancel dl"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.kind = ""  # what the repos table lists: "suggested" or "search"
        self.suggested: dict[str, catalog.CatalogEntry] = {}
        self.generation = 0
        self.repo_id: str | None = None  # the repo whose files are listed
        self.checks: dict[str, hub.FitCheck] = {}
        self.files_cancel: threading.Event | None = None
        self.downloads: dict[str, Download] = {}
        self.active: str | None = None
        self._ids = itertools.count(1)

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="hub-main"):
            with Horizontal(id="hub-bar"):
                yield self.make_input(placeholder="/ search GGUF models on the Hub, Enter to search; empty: Suggested",
                                      id="hub-search")
            yield Static("", id="hub-status", markup=False)
            yield LabTable(id="hub-repos", cursor_type="row", zebra_stripes=True)
            with Vertical(id="hub-files-box"):
                yield Static("Open a repo (Enter or o) to see its files, sizes and memory fit.",
                             id="hub-files-status", markup=False)
                yield LabTable(id="hub-files", cursor_type="row", zebra_stripes=True)
            with Vertical(id="hub-queue-box"):
                yield Static("", id="hub-queue-title", markup=False)
                yield ListView(id="hub-queue")

    def on_mount(self) -> None:
        files = self.query_one("#hub-files", DataTable)
        for key, title in FILE_COLUMNS:
            files.add_column(title, key=key)
        self.show_suggested()
        self.query_one("#hub-repos", DataTable).focus()

    def on_unmount(self) -> None:
        # However the app ends, no download keeps going: each stops at its next chunk, and the
        # partial file stays for a resume.
        for item in self.downloads.values():
            item.cancel.set()
        if self.files_cancel is not None:
            self.files_cancel.set()

    # -- the repos table: Suggested, or search results
    def _set_kind(self, kind: str) -> DataTable:
        table = self.query_one("#hub-repos", DataTable)
        if kind != self.kind:
            table.clear(columns=True)
            for key, title in (SUGGESTED_COLUMNS if kind == "suggested" else HIT_COLUMNS):
                table.add_column(title, key=key)
            self.kind = kind
        else:
            table.clear()
        return table

    def show_suggested(self) -> None:
        """List the curated catalog; it is read from the package, so it works offline."""
        self.generation += 1  # a search still on its way is no longer wanted
        table = self._set_kind("suggested")
        try:
            entries = catalog.load()
        except LabError as exc:
            entries = []
            self._status(sentence(str(exc)))
        self.suggested = {e.repo: e for e in entries}
        for e in entries:
            table.add_row(e.name, e.repo, Text(e.params, justify="right"), e.license, e.note, key=e.repo)
        if entries:
            if hub.is_offline():
                self._status(sentence(hub.OFFLINE_MESSAGE))
            else:
                self._status(f"Suggested: {len(entries)} curated models (models/catalog.toml). "
                             "Type to search the Hub; Enter opens a repo, d downloads.")

    def _status(self, text: str) -> None:
        self.query_one("#hub-status", Static).update(text)

    @on(Input.Submitted, "#hub-search")
    def _submitted(self, event: Input.Submitted) -> None:
        self.search(event.value)

    @on(Input.Changed, "#hub-search")
    def _changed(self, event: Input.Changed) -> None:
        if not event.value.strip() and self.kind != "suggested":
            self.show_suggested()

    def search(self, query: str) -> None:
        """Search the Hub for ``query`` (the Suggested list when it is empty)."""
        query = query.strip()
        if not query:
            self.show_suggested()
            return
        self.generation += 1
        self._status(f"Searching the Hub for '{query}'…")
        self._search(query, self.generation)

    @work(thread=True, exclusive=True, exit_on_error=False, group="hub-search")
    def _search(self, query: str, generation: int) -> None:
        try:
            hits = hub.search(query, SEARCH_LIMIT)
        except HubError as exc:
            self.post_message(HubSearched(query, generation, [], str(exc)))
            return
        self.post_message(HubSearched(query, generation, hits))

    def on_hub_searched(self, message: HubSearched) -> None:
        if message.generation != self.generation:
            return  # superseded by a newer search or by the Suggested list
        if message.error:
            # The list stays as it was (Suggested, or the last results) and says why it did not change.
            self._status(sentence(message.error))
            return
        table = self._set_kind("search")
        right = lambda v: Text(v, justify="right")  # noqa: E731
        for h in message.hits:
            repo = Text(h.repo_id + (" (gated)" if h.gated else ""))
            table.add_row(repo, right(fmt.num(h.downloads)), right(fmt.num(h.likes)),
                          (h.last_modified or fmt.NA)[:10], right(fmt.human_count(h.n_params)),
                          h.architecture or fmt.NA, key=h.repo_id)
        n = len(message.hits)
        if n:
            self._status(f"{n} GGUF repositor{'ies' if n != 1 else 'y'} match '{message.query}', most "
                         "downloaded first. Enter opens one; clear the search for Suggested.")
            table.focus()
        else:
            self._status(f"No GGUF repositories match '{message.query}'.")

    def _repo_cursor(self) -> str | None:
        table = self.query_one("#hub-repos", DataTable)
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # no valid cursor while the table is being rebuilt
            return None

    # -- the files table: one repo's quants with their fit
    @on(DataTable.RowSelected, "#hub-repos")
    def _repo_selected(self, event: DataTable.RowSelected) -> None:
        self.open_repo(str(event.row_key.value))

    def open_repo(self, repo_id: str) -> None:
        """List ``repo_id``'s GGUF files and estimate each one's memory at the app's context."""
        if self.files_cancel is not None:
            self.files_cancel.set()  # the header probe of the previous repo is not wanted now
        self.files_cancel = threading.Event()
        self.repo_id = repo_id
        self.checks = {}
        self.query_one("#hub-files", DataTable).clear()
        n_ctx = getattr(self.app, "default_context", 4096)
        self.query_one("#hub-files-status", Static).update(
            f"{repo_id}: reading the file list and one GGUF header…")
        machine = getattr(self.app, "machine", None)
        # The Library's figures: the app's available RAM (injectable), the machine's VRAM.
        budget = hub.MemoryBudget(self.app.memory_available(),  # type: ignore[attr-defined]
                                  machine.vram_total if machine is not None else None)
        self._load_files(repo_id, n_ctx, budget, self.files_cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="hub-files")
    def _load_files(self, repo_id: str, n_ctx: int, budget: hub.MemoryBudget, cancel: threading.Event) -> None:
        try:
            checks = hub.fit_check(repo_id, None, n_ctx, budget=budget, cancel=cancel)
        except Cancelled:
            return  # another repo was opened
        except (HubError, LabError) as exc:
            self.post_message(HubFilesLoaded(repo_id, [], str(exc)))
            return
        self.post_message(HubFilesLoaded(repo_id, checks))

    def on_hub_files_loaded(self, message: HubFilesLoaded) -> None:
        if message.repo_id != self.repo_id:
            return
        status = self.query_one("#hub-files-status", Static)
        if message.error:
            status.update(f"{message.repo_id}: {sentence(message.error)}")
            return
        table = self.query_one("#hub-files", DataTable)
        table.clear()
        self.checks = {}
        right = lambda v: Text(v, justify="right")  # noqa: E731
        for c in message.checks:
            qf = c.file
            self.checks[qf.path] = c
            fits = fits_text(c.fits)
            table.add_row(
                qf.path, qf.quant or fmt.NA, c.header_quant or fmt.NA, right(str(qf.n_parts)),
                right(fmt.human_bytes(qf.size)), right(str(c.n_ctx)), right(fmt.human_bytes(c.estimate_bytes)),
                Text(fits, style="bold" if fits == "NO" else ""), c.basis, key=qf.path,
            )
        if not message.checks:
            status.update(f"{message.repo_id} has no GGUF files.")
            return
        status.update(self._files_summary(message.repo_id, message.checks))
        default = self._default_file(message.repo_id, message.checks)
        if default is not None:
            table.move_cursor(row=table.get_row_index(default))
        table.focus()

    def _files_summary(self, repo_id: str, checks: list[hub.FitCheck]) -> str:
        budget = checks[0].budget
        probed = [c for c in checks if c.basis == "header"]
        asked = getattr(self.app, "default_context", 4096)
        ctx = max(c.n_ctx for c in checks)
        capped = " (the model's training context)" if ctx < asked else ""
        parts = [f"{repo_id}: {len(checks)} file{'s' if len(checks) != 1 else ''}, memory at "
                 f"{ctx} tokens{capped} against {fmt.human_bytes(budget.ram_bytes)} RAM available"]
        if probed:
            parts.append(f"header read with a Range request ({fmt.human_bytes(sum(c.bytes_fetched for c in probed))} "
                         "fetched, not the file)")
        fallback = [c for c in checks if c.basis == "file size"]
        if fallback and fallback[0].note:
            parts.append(fallback[0].note)
        return "; ".join(parts) + ". Enter or d downloads the highlighted file."

    def _default_file(self, repo_id: str, checks: list[hub.FitCheck]) -> str | None:
        """The file ``pull REPO`` (or the catalog's quant) would take, to put the cursor on."""
        entry = self.suggested.get(repo_id) if self.kind == "suggested" else None
        files = [c.file for c in checks]
        for spec in ([hub.PullSpec(repo_id, quant=entry.quant)] if entry else []) + [hub.PullSpec(repo_id)]:
            try:
                return hub.pick_file(files, spec).path
            except HubError:
                continue
        return None

    def _file_cursor(self) -> str | None:
        table = self.query_one("#hub-files", DataTable)
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:
            return None

    @on(DataTable.RowSelected, "#hub-files")
    def _file_selected(self, event: DataTable.RowSelected) -> None:
        check = self.checks.get(str(event.row_key.value))
        if check is not None:
            self.queue(check.file.spec, check.file.repo_id, check.file.path)

    # -- the download queue
    def queue(self, spec: str, repo_id: str, label: str) -> Download | None:
        """Add a download to the queue (it starts when the one before it ends)."""
        item = self.downloads.get(spec)
        if item is not None and item.state not in FINISHED:
            self.notify(f"{label} is already in the download queue.", severity="warning")
            return None
        view = self.query_one("#hub-queue", ListView)
        if item is not None:  # queued again after it ended: reuse its row
            item.cancel, item.state, item.progress, item.note = threading.Event(), "queued", None, None
        else:
            item = Download(spec, repo_id, label, f"hub-dl-{next(self._ids)}")
            self.downloads[spec] = item
            # Kept by reference: a row is drawn in place at every update, mounted or not yet.
            item.gauge = Gauge("queued", label_width=11, classes="queue-gauge")
            item.note_widget = Static("", classes="queue-note", markup=False)
            shown = label if label.startswith(repo_id) else f"{label}  {repo_id}"
            name = Static(shown, classes="queue-name", markup=False)
            view.append(ListItem(name, item.gauge, item.note_widget, id=item.item_id, classes="queue-row"))
            self.add_class("-has-queue")
        self._draw(item)
        self._start_next()
        return item

    def _start_next(self) -> None:
        if self.active is not None:
            return
        for item in self.downloads.values():
            if item.state == "queued":
                self.active = item.key
                item.state = "downloading"
                self._draw(item)
                if item.gauge is not None:  # keep the running download in sight in a short queue
                    self.query_one("#hub-queue", ListView).scroll_to_widget(item.gauge, animate=False)
                self._pull(item.key, item.cancel)
                return
        self._draw_title()

    @work(thread=True, exit_on_error=False, group="hub-download")
    def _pull(self, key: str, cancel: threading.Event) -> None:
        last = [0.0]

        def progress(p: hub.DownloadProgress) -> None:
            now = time.monotonic()
            if p.phase == "download" and now - last[0] < PROGRESS_INTERVAL_S:
                return
            last[0] = now
            self.post_message(HubDownloadProgress(key, p))

        try:
            pulled = hub.pull(key, progress=progress, cancel=cancel)
        except Cancelled as exc:
            self.post_message(HubDownloadFinished(key, error=str(exc), cancelled=True))
            return
        except LabError as exc:
            self.post_message(HubDownloadFinished(key, error=str(exc)))
            return
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            hub.register_pulled(store, pulled)
        except LabError as exc:
            self.post_message(HubDownloadFinished(key, error=str(exc)))
            return
        finally:
            store.close()
        self.post_message(HubDownloadFinished(key, pulled=pulled))

    def on_hub_download_progress(self, message: HubDownloadProgress) -> None:
        item = self.downloads.get(message.key)
        if item is None or item.state in FINISHED:
            return
        item.progress = message.progress
        if item.state != "cancelling":
            item.state = {"verify": "verifying", "done": "verifying"}.get(message.progress.phase, "downloading")
        self._draw(item)

    def on_hub_download_finished(self, message: HubDownloadFinished) -> None:
        item = self.downloads.get(message.key)
        if item is None:
            return
        if self.active == message.key:
            self.active = None
        if message.pulled is not None:
            pulled = message.pulled
            item.state = "done"
            if pulled.already_cached:
                how = "was already downloaded"
            else:
                resumed = f", resumed after {fmt.human_bytes(pulled.resumed_bytes)}" if pulled.resumed_bytes else ""
                how = f"downloaded{resumed}, sha256 verified"
            item.note = f"{fmt.human_bytes(pulled.size)} {how}; in the Library as {pulled.name}."
            self.notify(f"{pulled.name} is in the Library.")
            self.app.rescan_library()  # type: ignore[attr-defined]
        elif message.cancelled:
            item.state = "cancelled"
            # The domain's sentence has the exact byte count kept on disk for the resume.
            text = message.error or "download cancelled; the partial file is kept"
            item.note = sentence(text[:1].upper() + text[1:])
        else:
            item.state = "failed"
            item.note = sentence(message.error or "the download failed")
            self.notify(item.note, severity="error", timeout=10)
        self._draw(item)
        self._start_next()

    def _draw(self, item: Download) -> None:
        if item.gauge is None or item.note_widget is None:
            return
        p = item.progress
        fraction = p.fraction if p is not None else None
        if item.state == "done":
            fraction = 1.0
        if item.state == "queued":
            text = "waiting for the download before it"
        else:
            text = progress_text(p, live=item.state not in FINISHED)
        item.gauge.set(fraction, text, label=item.state)
        note = item.note_widget
        note.update(item.note or "")
        note.set_class(bool(item.note), "-shown")
        self._draw_title()

    def _draw_title(self) -> None:
        counts: dict[str, int] = {}
        for item in self.downloads.values():
            state = "active" if item.state in ("downloading", "verifying", "cancelling") else item.state
            counts[state] = counts.get(state, 0) + 1
        order = ("active", "queued", "done", "cancelled", "failed")
        summary = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
        self.query_one("#hub-queue-title", Static).update(
            f"Downloads: {summary or 'none'} · c cancels")

    def _queue_cursor(self) -> Download | None:
        """The queue's highlighted download while the queue has focus; else the active one."""
        view = self.query_one("#hub-queue", ListView)
        child = view.highlighted_child
        if child is not None and view.has_focus:
            for item in self.downloads.values():
                if item.item_id == child.id:
                    return item
        return self.downloads.get(self.active) if self.active else None

    # -- actions
    def action_focus_search(self) -> None:
        self.query_one("#hub-search", Input).focus()

    def action_open(self) -> None:
        repo = self._repo_cursor()
        if repo is None:
            self.notify("No repo highlighted.", severity="warning")
            return
        self.open_repo(repo)

    def action_download(self) -> None:
        """Download the highlighted file; from the repos table, the repo's default quant."""
        focused = self.focused
        if focused is not None and focused.id == "hub-files":
            path = self._file_cursor()
            check = self.checks.get(path) if path else None
            if check is not None:
                self.queue(check.file.spec, check.file.repo_id, check.file.path)
            return
        repo = self._repo_cursor()
        if repo is None:
            self.notify("No repo highlighted.", severity="warning")
            return
        entry = self.suggested.get(repo) if self.kind == "suggested" else None
        spec = entry.spec if entry is not None else repo
        self.queue(spec, repo, spec)

    def action_cancel(self) -> None:
        item = self._queue_cursor()
        if item is None or item.state in FINISHED:
            self.notify("No download to cancel.", severity="warning")
            return
        item.cancel.set()
        if item.key == self.active:
            item.state = "cancelling"  # the worker stops at its next chunk and answers
        else:
            item.state = "cancelled"
            item.note = "Removed from the queue before it started."
        self._draw(item)

    def action_back(self) -> None:
        if self.focused is not None and self.focused.id in ("hub-files", "hub-queue"):
            self.query_one("#hub-repos", DataTable).focus()
        elif self.focused is not None and self.focused.id == "hub-search":
            self.query_one("#hub-repos", DataTable).focus()
