"""`[records]`: the rules of the radiopharmacy's records, as cited data (validated by pydantic).

Every limit carries `basis`: the guidance it comes from, printed with the record that applies
it. Defaults are the cited values; a site changes them in its configuration, never in code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.core.settings import StrictSection
from agent.qc.programme import Role, SigningPolicy, _roles
from agent.records.generator_rules import (
    ElutionRules,
    Generator,
    ShipmentRules,
    WasteRules,
    check_generators,
)

TestCode = Literal[
    "appearance",
    "ph",
    "rcp",
    "residual_solvents",
    "endotoxin",
    "filter_integrity",
    "sterility",
]
TEST_CODES: tuple[str, ...] = (
    "appearance",
    "ph",
    "rcp",
    "residual_solvents",
    "endotoxin",
    "filter_integrity",
    "sterility",
)
Grade = Literal["A", "B", "C", "D"]


class RecordSigning(SigningPolicy):
    """Who may sign records: the QC roles plus a qualified person's release decision."""

    released: list[Role] = Field(
        default_factory=_roles("qa"),
        description="Roles of the qualified person who releases a batch or eluate.",
    )
    rejected: list[Role] = Field(
        default_factory=_roles("qa"),
        description="Roles of the qualified person who rejects a batch or eluate.",
    )
    dispense: list[Role] = Field(
        default_factory=_roles("technologist", "radiopharmacist", "qa"),
        description="Roles who sign a dispensed dose (meaning `performed`).",
    )


class ReleaseTest(StrictSection):
    """One typed release test of a product's specification."""

    code: TestCode
    kind: Literal["range", "max", "min", "pass_fail", "text"] = Field(
        description="range: low ≤ value ≤ high; max: value ≤ high; min: value ≥ low; "
        "pass_fail: a conforming/not conforming result; text: the observation against `expect`."
    )
    low: float | None = None
    high: float | None = None
    unit: str = ""
    expect: str = Field(default="", description="For `text`: the conforming observation.")
    pending_allowed: bool = Field(
        default=False,
        description="The result may be pending at release (sterility: read after 14 days).",
    )
    basis: str = Field(min_length=1, description="The guidance the limit comes from.")

    @model_validator(mode="after")
    def _limits(self) -> ReleaseTest:
        need = {"range": ("low", "high"), "max": ("high",), "min": ("low",)}.get(self.kind, ())
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"test {self.code}: kind {self.kind} needs {', '.join(missing)}")
        if self.kind == "range" and self.low is not None and self.high is not None \
                and self.low > self.high:  # fmt: skip
            raise ValueError(f"test {self.code}: low {self.low} above high {self.high}")
        return self


def _fdg_tests() -> list[ReleaseTest]:
    ph_eur = "Ph. Eur. monograph 1325 Fludeoxyglucose (18F) injection"
    return [
        ReleaseTest(code="appearance", kind="text", expect="clear, colourless, free of particles",
                    basis=ph_eur),
        ReleaseTest(code="ph", kind="range", low=4.5, high=8.5, basis=ph_eur),
        ReleaseTest(code="rcp", kind="min", low=95.0, unit="%", basis=ph_eur),
        ReleaseTest(code="residual_solvents", kind="max", high=410.0, unit="ppm",
                    basis="Ph. Eur. 5.4 / ICH Q3C: acetonitrile ≤ 410 ppm"),
        ReleaseTest(code="endotoxin", kind="max", high=175.0, unit="IU/V",
                    basis="Ph. Eur. 1325: < 175/V IU per injection volume V"),
        ReleaseTest(code="filter_integrity", kind="pass_fail",
                    basis="EU GMP Annex 1 §8.87: sterilising filter integrity after use"),
        ReleaseTest(code="sterility", kind="pass_fail", pending_allowed=True,
                    basis="Ph. Eur. 2.6.1; released before the result under the site's "
                    "procedure (Ph. Eur. 1325, EU GMP Annex 1 §10.10)"),
    ]  # fmt: skip


class Product(StrictSection):
    """A radiopharmaceutical the site prepares, with its specification."""

    id: str = Field(min_length=1, description="Short code, e.g. `fdg`.")
    name: str = Field(min_length=1, description="As printed, e.g. `[18F]FDG`.")
    nuclide: str = Field(min_length=1)
    half_life_min: tuple[float, float] = Field(
        description="Identity: the measured half-life must lie in this window (minutes)."
    )
    half_life_basis: str = Field(min_length=1)
    shelf_life_h: float = Field(gt=0, description="Expiry: end of synthesis + this.")
    yield_investigation_pct: tuple[float, float] = Field(
        description="Decay-corrected yield outside this window opens a deviation."
    )
    yield_basis: str = Field(default="site validation of the synthesis process")
    tests: list[ReleaseTest] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Product:
        codes = [t.code for t in self.tests]
        if len(set(codes)) != len(codes):
            raise ValueError(f"product {self.id}: a release test is listed twice")
        return self


def _products() -> list[Product]:
    return [
        Product(
            id="fdg", name="[18F]FDG", nuclide="F-18", half_life_min=(105.0, 115.0),
            half_life_basis="Ph. Eur. 1325: radionuclidic identity, half-life 105 to 115 min",
            shelf_life_h=10.0, yield_investigation_pct=(50.0, 85.0), tests=_fdg_tests(),
        )
    ]  # fmt: skip


class ParticleLimit(StrictSection):
    """Maximum particles ≥ 0.5 µm per m³ of one cleanroom grade."""

    at_rest: float | None
    in_operation: float | None


def _annex1() -> dict[Grade, ParticleLimit]:
    return {
        "A": ParticleLimit(at_rest=3520, in_operation=3520),
        "B": ParticleLimit(at_rest=3520, in_operation=352_000),
        "C": ParticleLimit(at_rest=352_000, in_operation=3_520_000),
        "D": ParticleLimit(at_rest=3_520_000, in_operation=None),
    }


class Channel(StrictSection):
    """A live reading: device and channel."""

    device: str = Field(min_length=1)
    channel: str = Field(min_length=1)


class Environment(StrictSection):
    """The hot cell's environment during a synthesis run, and its limits."""

    grade: Grade = Field(default="A", description="The hot cell's cleanroom grade.")
    state: Literal["at_rest", "in_operation"] = "in_operation"
    particle_limits: dict[Grade, ParticleLimit] = Field(default_factory=_annex1)
    particle_basis: str = Field(default="EU GMP Annex 1 (2022) Table 1: particles ≥ 0.5 µm per m³")
    pressure_pa: tuple[float | None, float | None] = Field(
        default=(None, -20.0),
        description="Allowed hot-cell pressure against the room (Pa): low, high (None: open).",
    )
    pressure_basis: str = Field(default="site design: negative pressure for radioprotection")
    dose_rate_max_usv_h: float = Field(default=10.0, gt=0)
    dose_rate_basis: str = Field(default="site radiation protection programme: operator area")
    pressure: Channel | None = None
    particles: Channel | None = Field(default=None, description="Particles ≥ 0.5 µm per m³.")
    dose_rate: Channel | None = None


class Synthesis(StrictSection):
    """A synthesis module whose batch events make batch records."""

    device: str = Field(min_length=1, description="The OPC UA device that emits batch events.")
    channel: str = Field(default="batch", description="Its event channel.")
    product: str = Field(default="fdg", description="Product id of `[[records.products]]`.")
    calibrator: str | None = Field(
        default=None, description="The dose calibrator that assays the product vial."
    )
    environment: Environment = Field(default_factory=Environment)


class ReleaseRules(StrictSection):
    """The qualified person's release."""

    sterility_pending_allowed: bool = Field(
        default=True,
        description="A batch may be released with sterility pending (short-lived product).",
    )
    sterility_pending_procedure: str = Field(
        default="SOP-REL-001 release of short-lived radiopharmaceuticals before sterility",
        description="The site's procedure that allows it, cited on every such release.",
    )


class Dispensing(StrictSection):
    """Doses drawn from released batches."""

    patient_names: bool = Field(
        default=False,
        description="Record the patient's name beside the hospital number (off: number only).",
    )
    action_pct: float = Field(default=10.0, gt=0, description="Prescribed vs measured: action.")
    fail_pct: float = Field(default=20.0, gt=0, description="Prescribed vs measured: refused.")
    basis: str = Field(default="USP <825>; 10 CFR 35.63: ±20 % of the prescribed dosage")

    @model_validator(mode="after")
    def _order(self) -> Dispensing:
        if self.action_pct > self.fail_pct:
            raise ValueError("dispensing: action_pct above fail_pct")
        return self


class RecordsSection(StrictSection):
    """`[records]`: rules of the elution, batch, release, dispensing, shipment, waste records."""

    signing: RecordSigning = Field(default_factory=RecordSigning)
    products: list[Product] = Field(default_factory=_products)
    synthesis: list[Synthesis] = Field(default_factory=list)
    release: ReleaseRules = Field(default_factory=ReleaseRules)
    dispensing: Dispensing = Field(default_factory=Dispensing)
    # Generators and their elutions, waste and shipments: see agent.records.generator_rules
    elution: ElutionRules = Field(default_factory=ElutionRules)
    generators: list[Generator] = Field(default_factory=list)
    waste: WasteRules = Field(default_factory=WasteRules)
    shipments: ShipmentRules = Field(default_factory=ShipmentRules)

    @model_validator(mode="after")
    def _references(self) -> RecordsSection:
        check_generators(self.generators, self.elution)
        ids = [p.id for p in self.products]
        if len(set(ids)) != len(ids):
            raise ValueError("records.products: duplicate product id")
        for module in self.synthesis:
            if module.product not in ids:
                raise ValueError(
                    f"records.synthesis {module.device}: no product {module.product!r}"
                )
        return self

    def product(self, product_id: str) -> Product:
        """The product with this id (KeyError if none)."""
        for product in self.products:
            if product.id == product_id:
                return product
        raise KeyError(product_id)


__all__ = [
    "TEST_CODES",
    "Channel",
    "Dispensing",
    "Environment",
    "Product",
    "RecordSigning",
    "RecordsSection",
    "ReleaseRules",
    "ReleaseTest",
    "Synthesis",
]
