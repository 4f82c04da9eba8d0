"""A self-contained HTML report for leadership, in Bahasa Indonesia (or English).

The share of active sites big and clear, its trend over past sweeps as an inline SVG
chart, one row per agency with colours and reasons, and the website publication score
bands explained. No external resources (no fonts, scripts or images to fetch), and a
print stylesheet, so it can be mailed, archived or printed as it is.
"""

from __future__ import annotations

import re
from html import escape as html_escape
from typing import Iterable

from ..content import ScoringRules
from ..history import SweepPoint
from ..model import CHECKS
from ..sweep import EXPIRY_WARN_DAYS, SweepResult

CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # not allowed in HTML text


def escape(text: str) -> str:
    """HTML-escaped, controls (which HTML forbids) shown as U+FFFD."""
    return html_escape(CONTROLS.sub("\ufffd", text))

TEXT = {
    "id": {
        "title": "Laporan Keaktifan Situs Perangkat Daerah",
        "generated": "Hasil pemeriksaan {when} (durasi {duration} detik)",
        "active_share": "situs perangkat daerah aktif",
        "of": "{active} dari {total} situs",
        "expiring": "sertifikat kedaluwarsa dalam {days} hari",
        "mean_score": "rerata skor publikasi situs",
        "trend": "Tren persentase situs aktif",
        "trend_score": "rerata skor publikasi",
        "trend_active": "% situs aktif",
        "trend_one": "Baru ada satu pemeriksaan; tren tampil setelah pemeriksaan berikutnya.",
        "agencies": "Rincian per perangkat daerah",
        "col_agency": "Perangkat daerah",
        "col_status": "Status",
        "col_reasons": "Alasan",
        "col_cert": "Sertifikat (hari)",
        "col_score": "Skor publikasi",
        "col_items": "Yang dipublikasikan",
        "active": "Aktif",
        "inactive": "Tidak aktif",
        "none": "—",
        "all_good": "semua pemeriksaan lulus",
        "what_active": "Arti \u201caktif\u201d",
        "what_active_text": (
            "Sebuah situs dihitung aktif bila namanya terdaftar di semua server DNS "
            "otoritatif zona, HTTPS menjawab 200 dengan sertifikat yang sah untuk nama "
            "tersebut, dan halamannya berisi konten nyata (bukan halaman bawaan server, "
            "halaman parkir, atau halaman galat)."),
        "bands": "Skor publikasi situs",
        "bands_text": (
            "Skor publikasi situs (0\u2013100) menilai seberapa lengkap situs memuat enam "
            "komponen penyampaian pelayanan (PermenPANRB 15/2014), maklumat pelayanan, dan "
            "tautan SP4N-LAPOR!. Skor ini adalah penilaian alat ini sendiri, bukan penilaian "
            "kepatuhan Ombudsman RI (yang memerlukan kunjungan lapangan); nama kelompok A\u2013E "
            "hanya meminjam istilah Ombudsman. Aturan penilaian versi {version}."),
        "band_col": "Kelompok",
        "range_col": "Rentang skor",
        "label_col": "Keterangan",
        "weight_col": "Bobot",
        "item_col": "Unsur yang dinilai",
        "evidence": "Bukti",
        "documents": "Hanya dalam PDF atau gambar (mintakan versi HTML)",
        "footer": "Dibuat oleh provisioner (DKISP). Data lengkap: keluaran --format jsonl.",
    },
    "en": {
        "title": "Agency Website Activity Report",
        "generated": "Sweep of {when} (took {duration} seconds)",
        "active_share": "of agency sites are active",
        "of": "{active} of {total} sites",
        "expiring": "certificates expiring within {days} days",
        "mean_score": "mean website publication score",
        "trend": "Trend of the share of active sites",
        "trend_score": "mean publication score",
        "trend_active": "% sites active",
        "trend_one": "Only one sweep so far; the trend shows after the next one.",
        "agencies": "Per agency",
        "col_agency": "Agency",
        "col_status": "Status",
        "col_reasons": "Reasons",
        "col_cert": "Certificate (days)",
        "col_score": "Publication score",
        "col_items": "Published",
        "active": "Active",
        "inactive": "Not active",
        "none": "—",
        "all_good": "every check passed",
        "what_active": "What \u201cactive\u201d means",
        "what_active_text": (
            "A site counts as active when its name resolves at every authoritative "
            "nameserver of the zone, HTTPS answers 200 with a valid certificate for that "
            "name, and the page has real content (not a default server page, a parked page "
            "or an error page)."),
        "bands": "Website publication score",
        "bands_text": (
            "The website publication score (0\u2013100) rates how completely a site publishes "
            "the six service-delivery components (PermenPANRB 15/2014), the service pledge "
            "(maklumat) and a link to SP4N-LAPOR!. It is this tool's own score, not the "
            "Ombudsman RI compliance grade (which needs field visits); the A\u2013E band names "
            "only borrow the Ombudsman's vocabulary. Scoring rules version {version}."),
        "band_col": "Band",
        "range_col": "Score range",
        "label_col": "Meaning",
        "weight_col": "Weight",
        "item_col": "Item scored",
        "evidence": "Evidence",
        "documents": "Only as a PDF or an image (ask for an HTML version)",
        "footer": "Made by provisioner (DKISP). Full data: the --format jsonl output.",
    },
}

YES, NO = "\u2713", "\u2717"
ZONE_COLOURS = {"hijau": "#1b7a3d", "kuning": "#9a6a00", "merah": "#b3261e"}
CSS = """
:root { --ok: #1b7a3d; --bad: #b3261e; --warn: #9a6a00; --ink: #1d1d1f; --muted: #5b5b60;
        --line: #d8d8dc; --soft: #f4f4f6; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 10px; }
.muted { color: var(--muted); }
.figures { display: flex; flex-wrap: wrap; gap: 16px; margin: 20px 0; }
.figure { border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px; flex: 1 1 220px; }
.figure .big { font-size: 64px; font-weight: 700; line-height: 1.1; }
.figure .mid { font-size: 36px; font-weight: 700; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 7px 8px; text-align: left;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
.pill { display: inline-block; border-radius: 999px; padding: 1px 10px; color: #fff;
        font-weight: 600; white-space: nowrap; }
.pill.ok { background: var(--ok); color: #fff; } .pill.bad { background: var(--bad); color: #fff; }
ul.reasons { margin: 0; padding-left: 18px; } ul.reasons li { margin: 0; }
.items span { display: inline-block; min-width: 1.4em; text-align: center; border-radius: 4px;
              margin: 1px; padding: 0 3px; font-size: 12px; }
.items .yes { background: #dff2e5; color: var(--ok); } .items .no { background: #f9e0de; color: var(--bad); }
svg { max-width: 100%; height: auto; }
footer { margin-top: 36px; font-size: 13px; color: var(--muted); }
@media print { body { padding: 0; font-size: 11px; } .figure .big { font-size: 44px; }
  tr, .figure { break-inside: avoid; } a { color: inherit; text-decoration: none; } }
"""


def render(sweep: SweepResult, trend: list[SweepPoint], rules: ScoringRules, zone: str,
           lang: str = "id") -> str:
    t = TEXT[lang]
    when = sweep.started_at.astimezone().strftime("%d-%m-%Y %H:%M %Z")
    parts = [
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(t['title'])} \u2014 {escape(zone)}</title>\n<style>{CSS}</style>\n"
        f"</head>\n<body>\n<header>\n<h1>{escape(t['title'])} \u2014 {escape(zone)}</h1>\n"
        f"<p class=\"muted\">{escape(t['generated'].format(when=when, duration=_num(round(sweep.duration, 1), lang)))}</p>\n"
        "</header>\n<main>\n",
        _figures(sweep, rules, lang),
        f"<h2>{escape(t['trend'])}</h2>\n",
        _chart(trend, lang) if len(trend) > 1 else f"<p class=\"muted\">{escape(t['trend_one'])}</p>\n",
        f"<h2>{escape(t['agencies'])}</h2>\n",
        _agency_table(sweep.records, rules, lang),
        f"<h2>{escape(t['what_active'])}</h2>\n<p>{escape(t['what_active_text'])}</p>\n",
        _bands(rules, lang),
        f"</main>\n<footer>{escape(t['footer'])}</footer>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def _num(value: float, lang: str) -> str:
    text = f"{value:g}"
    return text.replace(".", ",") if lang == "id" else text


def _pct(value: float, lang: str) -> str:
    text = f"{value:.1f}"
    return (text.replace(".", ",") if lang == "id" else text) + "\u00a0%"


def _figures(sweep: SweepResult, rules: ScoringRules, lang: str) -> str:
    t, s = TEXT[lang], sweep.summary
    tone = "ok" if s.active == s.total else "bad" if s.active_pct < 50 else "warn"
    band = rules.band(s.mean_score)
    expiring = ", ".join(f"{a} ({d})" for a, d in s.expiring)
    return (
        '<section class="figures">\n'
        f'<div class="figure"><div class="big {tone}">{_pct(s.active_pct, lang)}</div>'
        f"<div>{escape(t['active_share'])}</div><div class=\"muted\">"
        f"{escape(t['of'].format(active=s.active, total=s.total))}</div></div>\n"
        f'<div class="figure"><div class="mid {"bad" if s.expiring else "ok"}">{len(s.expiring)}</div>'
        f"<div>{escape(t['expiring'].format(days=EXPIRY_WARN_DAYS))}</div>"
        f'<div class="muted">{escape(expiring)}</div></div>\n'
        f'<div class="figure"><div class="mid" style="color:{ZONE_COLOURS[band.zone]}">'
        f"{_num(s.mean_score, lang)} ({band.grade})</div>"
        f"<div>{escape(t['mean_score'])}</div>"
        f'<div class="muted">{escape(band.label[lang])}</div></div>\n'
        "</section>\n")


def _chart(trend: list[SweepPoint], lang: str) -> str:
    """Active share (solid) and mean publication score (dashed), 0-100, oldest left."""
    t = TEXT[lang]
    width, height, left, right, top, bottom = 720, 240, 44, 16, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(trend) - 1)

    def x(i: int) -> float:
        return left + i * step

    def y(value: float) -> float:
        return top + plot_h * (1 - value / 100)

    grid = "".join(
        f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d8d8dc"/>'
        f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#5b5b60">{v}</text>'
        for v in (0, 25, 50, 75, 100))
    label_every = max(1, len(trend) // 8)
    last = len(trend) - 1
    labels = "".join(
        f'<text x="{x(i):.1f}" y="{height - bottom + 16}" font-size="11" fill="#5b5b60" '
        f'text-anchor="{"start" if i == 0 else "end" if i == last else "middle"}">'
        f"{escape(p.started_at[:10])}</text>"
        for i, p in enumerate(trend) if i % label_every == 0 or i == last)

    def series(values: Iterable[float], colour: str, dash: str) -> str:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        return (f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5"'
                f'{dash}/>')

    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(p.active_pct):.1f}" r="3.5" fill="#1b7a3d">'
                   f"<title>{escape(p.started_at)}: {_pct(p.active_pct, lang)}</title></circle>"
                   for i, p in enumerate(trend))
    legend = (f'<text x="{left}" y="{height - 6}" font-size="12" fill="#1b7a3d">\u2014 '
              f"{escape(t['trend_active'])}</text>"
              f'<text x="{left + 160}" y="{height - 6}" font-size="12" fill="#5b5b60">- - '
              f"{escape(t['trend_score'])}</text>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(t["trend"])}">{grid}{labels}'
            + series((p.mean_score for p in trend), "#5b5b60", ' stroke-dasharray="6 4"')
            + series((p.active_pct for p in trend), "#1b7a3d", "")
            + dots + legend + "</svg>\n")


def _agency_table(records: tuple[dict, ...], rules: ScoringRules, lang: str) -> str:
    t = TEXT[lang]
    head = "".join(f"<th>{escape(t[c])}</th>" for c in
                   ("col_agency", "col_status", "col_reasons", "col_cert", "col_score", "col_items"))
    rows = [_agency_row(r, rules, lang) for r in sorted(
        records, key=lambda r: (r["active"], r["publication"]["score"], r["agency"] or ""))]
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>\n"


def _agency_row(record: dict, rules: ScoringRules, lang: str) -> str:
    t = TEXT[lang]
    name = record.get("name") or record["agency"] or record["url"]
    status = (f'<span class="pill ok">{escape(t["active"])}</span>' if record["active"]
              else f'<span class="pill bad">{escape(t["inactive"])}</span>')
    problems = [c for c in record["checks"] if c["status"] in ("fail", "error")
                and not c["id"].startswith("publication.")]
    listed = [(CHECKS[c["id"]].title(lang), c["detail"]) for c in problems] or \
        ([("", r) for r in record["reasons"]] if not record["active"] else [])
    reasons = ("<ul class=\"reasons\">" + "".join(
        f"<li><strong>{escape(title)}</strong>{': ' if title else ''}{escape(why)}</li>"
        for title, why in listed) + "</ul>") if listed \
        else f'<span class="muted">{escape(t["all_good"])}</span>'
    days = record["cert"]["days_left"]
    cert_tone = "bad" if days is not None and days < 7 else "warn" if days is not None \
        and days < EXPIRY_WARN_DAYS else ""
    score = record["publication"]["score"]
    band = rules.band(score)
    items = "".join(
        f'<span class="{"yes" if ok else "no"}" title="{escape(rules.label(item, lang))}">'
        f"{YES if ok else NO}\u00a0{escape(item)}</span>"
        for item, ok in record["publication"]["components"].items())
    return (f"<tr><td><strong>{escape(name)}</strong><br><span class=\"muted\">"
            f"{escape(record['url'])}</span></td><td>{status}</td><td>{reasons}</td>"
            f'<td class="num {cert_tone}">{escape(t["none"]) if days is None else days}</td>'
            f'<td class="num" style="color:{ZONE_COLOURS[band.zone]}"><strong>'
            f"{_num(score, lang)}</strong> ({band.grade})</td>"
            f'<td class="items">{items}{_evidence(record["publication"], lang)}</td></tr>\n')


def _evidence(publication: dict, lang: str) -> str:
    """Where each item was found, and the standards seen only as documents, folded
    under the items (the site's own text, escaped)."""
    t = TEXT[lang]
    found = "".join(f"<li><strong>{escape(item)}</strong> {escape(e['page'])}: "
                    f"\u201c{escape(e['snippet'])}\u201d</li>"
                    for item, e in publication.get("evidence", {}).items())
    documents = "".join(f"<li>{escape(d)}</li>" for d in publication.get("documents", ()))
    return ((f"<details><summary>{escape(t['evidence'])}</summary><ul>{found}</ul></details>"
             if found else "")
            + (f"<p class=\"warn\">{escape(t['documents'])}:</p><ul>{documents}</ul>"
               if documents else ""))


def _bands(rules: ScoringRules, lang: str) -> str:
    t = TEXT[lang]
    tops = [100.0] + [b.min - 0.01 for b in rules.bands[:-1]]
    band_rows = "".join(
        f'<tr><td style="color:{ZONE_COLOURS[b.zone]}"><strong>{b.grade}</strong></td>'
        f"<td>{_num(b.min, lang)}\u2013{_num(top, lang)}</td><td>{escape(b.label[lang])}</td></tr>"
        for b, top in zip(rules.bands, tops))
    weights = [(rules.label(c.id, lang), c.weight) for c in rules.components]
    weights.append((rules.label(rules.lapor_id, lang), rules.lapor_weight))
    weight_rows = "".join(f"<tr><td>{escape(label)}</td><td class=\"num\">{_num(w, lang)}</td></tr>"
                          for label, w in weights)
    return (f"<h2>{escape(t['bands'])}</h2>\n"
            f"<p>{escape(t['bands_text'].format(version=rules.version))}</p>\n"
            f"<table>\n<thead><tr><th>{escape(t['band_col'])}</th><th>{escape(t['range_col'])}"
            f"</th><th>{escape(t['label_col'])}</th></tr></thead>\n<tbody>{band_rows}</tbody>\n"
            "</table>\n<p></p>\n"
            f"<table>\n<thead><tr><th>{escape(t['item_col'])}</th><th>{escape(t['weight_col'])}"
            f"</th></tr></thead>\n<tbody>{weight_rows}</tbody>\n</table>\n")
