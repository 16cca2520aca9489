"""The model card: the JSON contract between training/ (writer) and inference/ (reader).

inference/ takes every shape, name and constant from here, never from constants of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MODELS_DIR = Path(__file__).with_name("models")  # the shipped models, inside the package


class TensorSpec(BaseModel):
    name: str
    shape: list[int | str]
    layout: str = "NCHW"
    dtype: str = "float32"


class Preprocessing(BaseModel):
    """How an image becomes the input tensor. Extra keys are allowed for model-specific steps
    (implemented in inference/preprocess.py, which training imports)."""

    model_config = ConfigDict(extra="allow")

    size: tuple[int, int]  # (height, width) of the input tensor
    colour: str = "rgb"
    mean: list[float] = Field(default_factory=lambda: [127.0, 127.0, 127.0])
    std: list[float] = Field(default_factory=lambda: [128.0, 128.0, 128.0])


class PopulationCalibration(BaseModel):
    """Mondrian (group-conditional) split-conformal half-widths and the referral margin of one
    population (children, adult women, adult men), each from that population's out-of-fold
    residuals only, and whether the population's figures met the validation targets."""

    q80: float
    q95: float
    n_calibration: int | None = None
    referral_margin: float | None = None
    validated: bool = False


class Calibration(BaseModel):
    """Split-conformal half-widths (g/dL) from out-of-fold absolute residuals, and the
    referral margin: refer when the estimate is below the group's cut-off + margin (chosen on
    out-of-fold predictions for a target sensitivity). Without a margin the 80% interval's
    half-width is used, the more cautious rule."""

    method: str = "split_conformal_abs_residual"
    q80: float
    q95: float
    n_calibration: int | None = None
    referral_margin: float | None = None
    per_population: dict[str, PopulationCalibration] = Field(default_factory=dict)

    def for_population(self, population: str | None) -> PopulationCalibration:
        """The population's own calibration, or the pooled one where the card has none."""
        if population is not None and population in self.per_population:
            return self.per_population[population]
        return PopulationCalibration(
            q80=self.q80,
            q95=self.q95,
            n_calibration=self.n_calibration,
            referral_margin=self.referral_margin,
        )


class GroupInput(BaseModel):
    """The regressor's second input: a one-hot of the person's population, in `populations`
    order; `population_of` maps every WHO group (inference/who_anaemia_2024.json) to one.
    Groups without data of their own (pregnancy, children over 5) are mapped to the nearest
    population and are left out of `validated_groups`."""

    name: str = "group"
    populations: list[str]
    population_of: dict[str, str]


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: str
    task: Literal["segmentation", "regression"]
    file: str
    inputs: list[TensorSpec]
    outputs: dict[str, str]  # role ("logits", "hb", "heatmap") -> graph output name
    preprocessing: Preprocessing
    threshold: float | None = None  # segmentation: probability cut
    calibration: Calibration | None = None  # regression only
    validated_groups: list[str] = Field(default_factory=list)
    group_input: GroupInput | None = None  # regression: the person's population as an input
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    licence: str = ""
    citation: list[str] = Field(default_factory=list)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    def population_for(self, group: str) -> str | None:
        """The population a WHO group is screened as (None for a card without group input)."""
        return self.group_input.population_of.get(group) if self.group_input else None


def load_card(name: str, models_dir: Path | None = None) -> ModelCard:
    """Read `<name>.json` beside `<name>.onnx`; a clear error if either is missing."""
    root = Path(models_dir) if models_dir else MODELS_DIR
    path = root / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"model card {path} not found; run `hbscreen train` or point HBSCREEN_MODELS_DIR "
            "at a folder holding segmentation.{onnx,json} and regression.{onnx,json}"
        )
    card = ModelCard.model_validate_json(path.read_text("utf-8"))
    if not (root / card.file).is_file():
        raise FileNotFoundError(f"model file {root / card.file} named by {path} not found")
    return card
