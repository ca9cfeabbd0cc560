"""Texts the system writes for people, kept as data: a message code and its parameters.

An alert's message, a QC run's summary, a system audit record's reason or a central alert is
stored and streamed as `{"code": "alert.threshold.above", "params": {...}}` (records keep the
code, never a sentence in one language). Whoever shows it renders it in the reader's language
and the site's zone: `render()` here (PDFs, the fleet page), `msgText()` in the console's
JavaScript, both from the same `TEMPLATES` (their English texts are the catalogs' message ids).

Parameters are rendered by their names:

- `…_at` or `time`: an instant (RFC 3339 text), shown in the site's zone with its name;
- `result`, `state`, `test`, `outcome`, `release`, `severity`, `unit`: a code with a catalog
  text (`fail`, `on_hold`, `µSv/h`);
- `deviation`, `rate`: a signed number (`+2,15`);
- other numbers: the language's decimal sign (values are rounded where the message is made,
  to the instrument's resolution or the rule's precision);
- a nested message (`{"code", "params"}`), or a list of them (joined by "; ");
- anything else: as it is (device ids, prescription ids, paths: data, not language).

A code that is not in `TEMPLATES` is a catalog id itself (or, for alerts stored before codes,
the old English sentence) and is shown translated when the catalog has it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_, format_datetime, format_number, gettext

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

TIME_KEYS = frozenset({"time"})
CODE_KEYS = frozenset({"result", "state", "test", "outcome", "release", "severity", "unit"})
# UCUM codes as people write them (the console's UNIT_TEXT).
UNIT_TEXT = {"uSv/h": "µSv/h", "Cel": "°C", "1/m3": "1/m³", "m3": "m³", "m3/h": "m³/h",
             "uSv": "µSv", "kBq/m3": "kBq/m³", "Bq/m3": "Bq/m³", "%RH": "%", "[ppm]": "ppm"}
SIGNED_KEYS = frozenset({"deviation", "rate", "half_life_deviation"})  # shown with a sign

# Each code's English text (the catalogs' message id); its "{name}" placeholders, the params.
TEMPLATES: dict[str, str] = {
    # the QC rules' alerts and audit reasons
    "alert.threshold.above": N_("{channel} {value} {unit} above {limit}"),
    "alert.threshold.below": N_("{channel} {value} {unit} below {limit}"),
    "alert.threshold.value": N_("{channel} {value} {unit}"),
    "alert.background": N_("background {value} {unit} (limit {limit} {unit})"),
    "alert.rate": N_("{channel} changing {rate} {unit}/min"),
    "alert.back_to_normal": N_("back to normal: {what}"),
    "alert.stale": N_("no data from {what} for more than {limit} s"),
    "alert.stale.cleared": N_("data arriving again"),
    "alert.device.state": N_("{device} {state} for {seconds} s"),
    "alert.device.state_detail": N_("{device} {state} for {seconds} s: {detail}"),
    "alert.device.online": N_("device online"),
    "alert.cleared": N_("condition no longer present"),
    "qc.constancy": N_(
        "constancy {result}: {source} ({nuclide}) measured {measured} MBq, expected {expected} "
        "MBq, {deviation} % (action ±{action} %, fail ±{fail} %)"),
    "qc.dosage": N_(
        "dosage {rx} {result}: {activity} MBq at {scheduled_at} vs prescribed {prescribed} MBq "
        "({deviation} %; site ±{site} %, limit ±{limit} %)"),
    "qc.dosage.unmatched": N_("{measured} MBq {nuclide}: {outcome}; arm the prescription to "
                              "check it"),
    "qc.dosage.dispensed": N_("{result}; calibrator {release}"),
    "qc.half_life": N_("{nuclide} identity: T½ {fit} ± {uncertainty} min ({points} points over "
                       "{span} min), {outcome} {low}-{high} min"),
    "qc.half_life.wrong": N_("{nuclide} identity: T½ {fit} ± {uncertainty} min ({points} points "
                             "over {span} min), OUTSIDE {low}-{high} min; not {nuclide}?"),
    "qc.half_life.no_decay": N_("{nuclide} identity: no decay measured ({points} points over "
                                "{span} min), {outcome} {low}-{high} min"),
    # QC runs and release (agent/qc/manager.py)
    "qc.run.background": N_("background {result}: {measured} MBq"),
    "qc.run": N_("{test} {result}: {steps}"),
    "qc.run.step": N_("{setting} {measured} MBq vs {expected} MBq ({deviation} % {result})"),
    "qc.run.short": N_("{test} {result}"),
    "qc.run.linearity": N_(
        "linearity {result}: {points} points from {high} to {low} MBq; worst {deviation} %; "
        "fitted T½ {fit} ± {uncertainty} h vs table {table} h ({half_life_deviation} %)"),
    "qc.run.linearity.failing": N_("{summary}; outside tolerance: {failing}"),
    "qc.run.linearity.point": N_("point {index} (+{elapsed} h, {measured} MBq): {deviation} % "
                                 "{result}"),
    "qc.release.on_hold": N_("{device} ON HOLD: {reason} — not for patient doses"),
    "qc.release.released": N_("{device} released"),
    "qc.release.why": N_("{reasons}"),
    "qc.held_dosage": N_("dosage {rx} measured on {device} while it is ON HOLD ({reason}); "
                         "re-measure on a released calibrator"),
    "qc.held_dosage.override": N_("dosage {rx} measured on {device} while it is ON HOLD, "
                                  "override signed by {who}: {reason}"),
    # batch records (agent/records/batch.py)
    "records.batch.deviation": N_("batch {batch}: decay-corrected yield {value} % outside the "
                                  "investigation limits {low} to {high} %"),
    "records.receipt.deviation": N_(
        "shipment {shipment} from {origin}: measured {measured} MBq, expected {expected} MBq "
        "({deviation} %, tolerance ±{tolerance} %)"),
    "records.eluate.held": N_("eluate {eluate} held: {reasons}"),
    # the agent's own state (agent/service/runtime.py)
    "outbox.quota": N_("outbox {state}: {used} of {quota} bytes; paused: {paused}"),
    "outbox.quota.ok": N_("outbox back under quota ({used} bytes)"),
    "outbox.disk": N_("{cause}: {left} bytes left for {directory} (reserve {reserve}); "
                      "paused: {paused}"),
    "outbox.disk.full": N_("disk full (a write failed)"),
    "outbox.disk.state": N_("disk {state}"),
    "outbox.disk.ok": N_("disk space back: {left} bytes free for {directory}"),
    "state.damaged": N_("{path} was damaged ({reason}) and moved aside to {moved_to}; "
                        "envelopes not yet delivered are in that file; {continued}"),
    "state.damaged.continued": N_("seq continues from {seq}"),
    "state.damaged.restarted": N_("its chain could not be read: seq starts again from 1"),
    "state.damaged.audit": N_("damaged state database moved aside; a fresh one was started "
                              "({continued})"),
    "none": N_("none"),
    # central alerts (central/consumer.py, central/refusals.py)
    "central.conflicting_envelope": N_(
        "{site}/{agent} signed two different envelopes with seq {seq}: the first stored is kept "
        "as data, the other as evidence (conflicting_envelopes)"),
    "central.seq_jump": N_("{site}/{agent}: seq {seq} follows {previous} (more than {max_jump} "
                           "ahead): stored, but check the agent"),
    "central.clock": N_("{site}/{agent} seq {seq}: {flag} (stored, but check the agent's clock)"),
    "central.unknown_source": N_("messages from an unknown source on {topic}"),
    "central.rejected": N_("envelope rejected on {topic}: {reason}"),
    "central.chain_broken": N_("hash chain of {site}/{agent} broken at seq {seq}"),
    "central.chain_broken.more": N_("hash chain of {site}/{agent} broken at seq {seq} and {more} "
                                    "more"),
    "central.gap": N_("{site}/{agent}: envelopes {from_seq}..{to_seq} missing; replay requested"),
    "central.gap_permanent": N_("{site}/{agent}: envelopes {from_seq}..{to_seq} are lost for good "
                                "(not in the agent's archive)"),
    "central.many_sources": N_("{message} (and other sources: more than {n} new ones this hour)"),
}

# Requests refused (agent/qc/desk.py, agent/records/*.py): the console's JSON errors, rendered
# in the reader's language, keep their machine `code` beside the text.
TEMPLATES.update({
    "error.name_needed": N_("this needs the person's name"),
    "error.name_reason_needed": N_("this needs the person's name and a reason"),
    "error.time_scale": N_("time_scale must be a positive number"),
    "error.step_not_current": N_("step {index} of run {run} is not the step in progress"),
    "error.step_not_waiting": N_("step {index} of run {run} is not waiting for a confirmation"),
    "error.run_state": N_("run {run} is {state}"),
    "error.step_confirmed": N_("step {index} of run {run} is confirmed already"),
    "error.batch.pending_not_allowed": N_("test {test}: a pending result is not allowed"),
    "error.batch.number_needed": N_("test {test}: a finite number is needed"),
    "error.batch.pass_fail_needed": N_("test {test}: result pass or fail is needed"),
    "error.batch.observation_long": N_("test {test}: observation too long"),
    "error.batch.unknown_tests": N_("tests not in the specification of {product}: {tests}"),
    "error.batch.no_result": N_("test {test}: no result"),
    "error.batch.no_run": N_("no synthesis run of batch {batch} since the agent started"),
    "error.batch.nothing_to_assay": N_("batch {batch}: {state}, no product to assay yet"),
    "error.batch.no_calibrator": N_("synthesis module {device} has no calibrator"),
    "error.batch.recorded_already": N_("batch {batch} is recorded already ({record})"),
    "error.batch.no_eos": N_("batch {batch}: no end of synthesis yet"),
    "error.batch.not_assayed": N_("batch {batch}: the product has not been assayed"),
    "error.records.unknown_kind": N_("unknown record kind {kind}"),
    "error.correction.reason": N_("a correction needs a reason"),
    "error.correction.test_record": N_("QC test records are corrected by a new test"),
    "error.correction.keeps": N_("a correction cannot change {fields}"),
    "error.correction.already": N_("record {record} is corrected already by {by}"),
    "error.elution.no_generator": N_("no generator {generator} in records.generators"),
    "error.elution.no_run": N_("no elution run {run}"),
    "error.elution.volume": N_("the eluate's volume must be a positive number"),
    "error.elution.time_zone": N_("the elution time needs a time zone"),
    "error.elution.future": N_("the elution time is in the future"),
    "error.elution.ge68_follows": N_("a Ge-68 remeasurement follows a signed Ga-68 elution"),
    "error.elution.too_early": N_("the remeasurement is due at {due_at}, not before"),
    "error.elution.busy": N_("{device}: an elution is being measured"),
    "error.elution.spot_tc99m": N_("the Al3+ spot test belongs to a Tc-99m elution"),
    "error.elution.measure_first": N_("run {run} is {state}: measure the eluate first"),
    "error.elution.nothing_to_sign": N_("run {run} is {state}: nothing to sign yet"),
    "error.qc.no_programme": N_("no QC programme for device {device}; configured: "
                                "{configured}"),
    "error.qc.no_run": N_("no test run {run}"),
    "error.qc.not_in_programme": N_("{device}: test {test} is not in its QC programme"),
    "error.qc.running": N_("{device}: a {test} test is running"),
    "error.qc.not_linearity": N_("run {run} is not a running linearity test"),
    "error.qc.no_linearity": N_("no linearity test configured"),
    "error.qc.few_points": N_("only {points} points; the test needs {needed}"),
    "error.qc.fit_failed": N_("linearity fit failed: {detail}"),
    "error.qc.sign_not_completed": N_("run {run} is {state}; only a completed run can be "
                                      "signed"),
    "error.qc.review_meaning": N_("meaning must be 'reviewed' or 'approved'"),
    "error.qc.no_record": N_("no QC record {record}"),
    "error.qc.not_test_record": N_("record {record} is a {kind}: only test records are "
                                   "reviewed or approved"),
    "error.qc.approved_already": N_("record {record} is approved already (by {who})"),
    "error.qc.override_not_allowed": N_("this site does not allow measuring on a calibrator "
                                        "ON HOLD"),
    "error.qc.not_on_hold": N_("{device} is not on hold"),
    "error.qc.override_reason": N_("an override of a hold needs a reason"),
    "error.dose.no_reading": N_("no activity reading from {device}"),
    "error.dose.device_nuclide": N_("{device} measures {measured}, not {nuclide}"),
    "error.dose.reading_old": N_("the last reading of {device} is too old"),
    "error.dose.calibrator_not_released": N_("{device} is not released by its daily QC"),
    "error.dose.patient_id": N_("a hospital number (1 to 64 characters) is needed"),
    "error.dose.names_not_enabled": N_("patient names are not recorded at this site; give the "
                                       "hospital number only"),
    "error.dose.patient_name": N_("patient name too long"),
    "error.dose.volume": N_("the volume drawn (mL) must be positive"),
    "error.dose.unknown_batch": N_("no batch record of {batch}"),
    "error.dose.batch_not_released": N_("batch {batch} is not released"),
    "error.dose.batch_expired": N_("batch {batch} expired at {expiry_at}"),
    "error.dose.unknown_prescription": N_("no prescription {rx}"),
    "error.dose.rx_nuclide": N_("prescription {rx} is {prescribed}, batch is {nuclide}"),
    "error.dose.outside_limit": N_("{deviation} % from the prescription: beyond ±{limit} %, "
                                   "not dispensed"),
    "error.release.not_releasable": N_("{kind} records are not released"),
    "error.release.unknown": N_("no {kind} record of {subject}"),
    "error.release.bad_decision": N_("decision must be 'released' or 'rejected'"),
    "error.release.released_already": N_("{subject} was released already (record {record}); a "
                                         "different decision is a correction of that record"),
    "error.release.rejected_already": N_("{subject} was rejected already (record {record}); a "
                                         "different decision is a correction of that record"),
    "error.release.failed": N_("{subject} failed ({tests}): it can only be rejected"),
    "error.release.pending": N_("{subject}: {tests} pending, and the site's configuration does "
                                "not allow a release before the result"),
})

# Reasons the system writes to the audit trail as short fixed texts (sign-in, sign-out, a shelf
# ending, a refused configuration, a new key): each text is its own code.
TEMPLATES.update({text: text for text in (
    N_("signed in on the login page"), N_("switch user"), N_("signed out"),
    N_("unknown user"), N_("wrong password"), N_("malformed basic credentials"),
    N_("unknown bearer token"), N_("shelf expired"),
    N_("invalid configuration; the running one is kept"),
    N_("the configured signing key differs from the one used last"),
)})

# Codes shown translated as parameters (marked for the catalogs; most are in the console too).
CODE_TEXTS = (
    N_("pass"), N_("action"), N_("fail"), N_("on_hold"), N_("released"), N_("no QC programme"),
    N_("unmatched"), N_("ambiguous"), N_("outside site tolerance"),
    N_("outside regulatory limit"), N_("offline"), N_("degraded"), N_("high"), N_("full"),
    N_("within"), N_("OUTSIDE"), N_("background"), N_("constancy"), N_("linearity"),
    N_("accuracy"), N_("geometry"),
)


@dataclass(frozen=True, slots=True)
class Message:
    """A text for people as data: a code (see `TEMPLATES`) and its parameters."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """The stored and streamed form."""
        return {"code": self.code, "params": self.params}

    def text(self, lang: str = "en", zone: ZoneInfo | None = None) -> str:
        """Rendered in `lang` and `zone`."""
        return render(self, lang, zone)

    def __str__(self) -> str:
        return render(self, "en", None)


def msg(code: str, **params: Any) -> Message:
    """A message of a known code (a typo in a code fails here, not on a reader's screen)."""
    if code not in TEMPLATES:
        raise KeyError(f"unknown message code {code!r}")
    return Message(code, {k: _plain(v) for k, v in params.items()})


def _plain(value: Any) -> Any:
    """Parameters as JSON data (nested messages as their data form)."""
    if isinstance(value, Message):
        return value.as_data()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_message(value: Any, params: dict[str, Any] | None = None) -> Message:
    """A `Message` from its data form, a message, or a plain (legacy) text."""
    if isinstance(value, Message):
        return value
    if isinstance(value, dict) and isinstance(value.get("code"), str):
        inner = value.get("params")
        return Message(value["code"], inner if isinstance(inner, dict) else {})
    return Message("" if value is None else str(value), params or {})


def render(message: Message | dict[str, Any] | str | None, lang: str, zone: ZoneInfo | None,
           params: dict[str, Any] | None = None) -> str:
    """`message` as a person reads it in `lang`, times in `zone`."""
    m = as_message(message, params)
    template = TEMPLATES.get(m.code, m.code)
    text = gettext(lang, template) if template else ""
    if not m.params:
        return text
    values = {k: _param(k, v, lang, zone) for k, v in m.params.items()}
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError):
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template


def _param(key: str, value: Any, lang: str, zone: ZoneInfo | None) -> str:  # noqa: C901, PLR0911
    if value is None:
        return "—"
    if isinstance(value, dict) and "code" in value:
        return render(value, lang, zone)
    if isinstance(value, list):
        return "; ".join(_param(key, v, lang, zone) for v in value)
    if isinstance(value, bool):
        return str(value)
    if (key in TIME_KEYS or key.endswith("_at")) and isinstance(value, str):
        try:
            return format_datetime(value, lang, zone)
        except ValueError:
            return value
    if isinstance(value, (int, float)):
        whole = isinstance(value, int) or (math.isfinite(value) and abs(value) >= 1e6)  # noqa: PLR2004
        text = format_number(value, lang, decimals=0 if whole else None, significant=6)
        if key in SIGNED_KEYS and isinstance(value, float) and math.isfinite(value) and value >= 0:
            return "+" + text
        return text
    if key == "unit" and isinstance(value, str):
        return gettext(lang, UNIT_TEXT.get(value, value))
    if key in CODE_KEYS and isinstance(value, str):
        return gettext(lang, value)
    return str(value)


def render_reason(reason: Any, params: Any, lang: str, zone: ZoneInfo | None) -> str:
    """An audit record's reason: a person's words as typed, the system's as its code rendered."""
    if not reason:
        return ""
    if isinstance(params, dict) or reason in TEMPLATES:
        return render(Message(str(reason), params if isinstance(params, dict) else {}), lang, zone)
    return str(reason)


def render_reasons(state: dict[str, Any], lang: str, zone: ZoneInfo | None) -> str:
    """A release state's reasons (`[[catalog id, params], ...]`), else its English `reason`."""
    pairs = state.get("reasons")
    if not isinstance(pairs, list) or not pairs:
        return str(state.get("reason") or "")
    return "; ".join(render(Message(str(p[0]), dict(p[1]) if isinstance(p[1], dict) else {}),
                            lang, zone)
                     for p in pairs if isinstance(p, (list, tuple)) and len(p) == 2)  # noqa: PLR2004


def rounded(value: float, significant: int = 4) -> float:
    """`value` to `significant` digits (a message's number, not the record's)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, significant - 1 - math.floor(math.log10(abs(value))))


def templates_json() -> dict[str, str]:
    """The codes' English texts, for the JavaScript (which translates the text with its catalog)."""
    return dict(TEMPLATES)


__all__ = ["TEMPLATES", "Message", "as_message", "msg", "render", "render_reason", "render_reasons",
           "rounded", "templates_json"]
