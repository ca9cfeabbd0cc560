"""The demo's simulated dose calibrators under the console's hands (`isoedge demo` only).

On a real site the technologist places the source in the chamber and turns the setting knob;
in the demo nobody can, so the console shows this panel (the agent's `simulator_panel`, which
only `isoedge demo` sets): empty the chamber, place a source of the QC programme (at its
decay-corrected activity), put the demo's vial back, select a setting, or place a linearity
sample that decays `LINEARITY_TIME_SCALE` times faster than real time. The guided QC steps and
a linearity run can then be done from a browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from agent.physics.nuclides import normalize_nuclide

if TYPE_CHECKING:
    from agent.qc.desk import QADesk
    from simulators.dosecal import DoseCalibratorSimulator

log = structlog.get_logger("isoedge.demo")

ACTIONS = ("empty", "place", "vial", "setting", "linearity")
# The demo's linearity sample decays this much faster than real time: a 48 h decay-method run
# (a point every 30 min) takes 4 min. The console starts the run with the same scale.
LINEARITY_TIME_SCALE = 720.0
LINEARITY_ACTIVITY_MBQ = 40_000.0  # top of a Tc-99m range: above the minimum after 8 half-lives


class DemoSimulatorPanel:
    """Satisfies the console's `SimulatorPanel` over the demo's calibrator simulators."""

    def __init__(self, manager: QADesk, simulators: dict[str, DoseCalibratorSimulator]) -> None:
        self._manager = manager
        self._simulators = simulators
        # The demo's vial as it was at start (put back by `vial`).
        self._vials = {device: (sim.chamber.sample_nuclide, sim.chamber.a0_mbq)
                       for device, sim in simulators.items()}  # fmt: skip

    def _settings(self, device: str) -> list[str]:
        settings: list[str] = []
        if device in self._manager.devices:
            programme = self._manager.programme(device)
            if programme.constancy is not None:
                settings += [s.nuclide for s in programme.constancy.settings]
            settings += [s.nuclide for s in programme.sources]
            if programme.linearity is not None:
                settings.append(programme.linearity.nuclide)
        settings.append(self._vials[device][0])
        return list(dict.fromkeys(settings))

    def _linearity(self, device: str) -> dict[str, Any] | None:
        if device not in self._manager.devices:
            return None
        lin = self._manager.programme(device).linearity
        if lin is None:
            return None
        return {"nuclide": lin.nuclide, "activity_mbq": LINEARITY_ACTIVITY_MBQ,
                "time_scale": LINEARITY_TIME_SCALE}  # fmt: skip

    @staticmethod
    def _real_time(sim: DoseCalibratorSimulator) -> None:
        """What goes in next decays in real time (a time-scaled linearity sample taken out)."""
        sim.chamber.time_scale = 1.0

    def state(self) -> dict[str, dict[str, Any]]:
        """Per simulated calibrator: chamber, setting, the sources and settings on offer."""
        out: dict[str, dict[str, Any]] = {}
        for device, sim in self._simulators.items():
            chamber = sim.chamber
            sources = []
            if device in self._manager.devices:
                sources = [{"id": s.id, "nuclide": s.nuclide}
                           for s in self._manager.programme(device).sources]  # fmt: skip
            out[device] = {
                "sample": chamber.sample_nuclide if chamber.a0_mbq > 0 else None,
                "activity_mbq": chamber.true_activity_mbq() if chamber.a0_mbq > 0 else 0.0,
                "setting": chamber.selected_nuclide,
                "sources": sources,
                "settings": self._settings(device),
                "vial": self._vials[device][0],
                "linearity": self._linearity(device),
            }
        return out

    def act(self, device: str, action: str, *, source: str | None = None,
            nuclide: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Do `action` on `device`'s simulator; its new state."""
        sim = self._simulators.get(device)
        if sim is None:
            raise ValueError(f"{device}: not a simulated calibrator")
        if action == "empty":
            self._real_time(sim)
            sim.empty()
        elif action == "place":
            ids = {s.id for s in self._manager.programme(device).sources} \
                if device in self._manager.devices else set()  # fmt: skip
            if source not in ids:
                raise ValueError(f"{device}: no source {source!r} in its QC programme")
            known = self._manager.programme(device).source(source)
            activity, _ = self._manager.expected_activity(device, known.id)
            self._real_time(sim)
            sim.place_source(known.nuclide, activity)
        elif action == "vial":
            self._real_time(sim)
            sim.load_sample(*self._vials[device])
        elif action == "linearity":
            lin = self._linearity(device)
            if lin is None:
                raise ValueError(f"{device}: no linearity test in its QC programme")
            sim.chamber.time_scale = lin["time_scale"]  # before loading: t0 on the new clock
            sim.place_source(lin["nuclide"], lin["activity_mbq"])
        elif action == "setting":
            wanted = normalize_nuclide(nuclide or "")
            if wanted is None or wanted not in self._settings(device):
                raise ValueError(f"{device}: no setting {nuclide!r}")
            sim.set_nuclide(wanted)
        else:
            raise ValueError(f"unknown simulator action {action!r}; expected one of {ACTIONS}")
        log.info("demo simulator", device=device, action=action, source=source, nuclide=nuclide)
        return self.state()[device]


__all__ = ["ACTIONS", "LINEARITY_TIME_SCALE", "DemoSimulatorPanel"]
