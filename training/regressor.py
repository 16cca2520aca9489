"""The haemoglobin regressor: a colour network whose heatmap is its own CAM.

Why this shape: the signal in a conjunctiva photo is its colour (pallor), and ~400 distinct
images are far too few to fine-tune an ImageNet backbone (measured: EfficientNet-Lite0 MAE
1.72, r 0.31; a trained 1x1-conv network underfit on this 2-core machine). The network is a
per-pixel colour model: frozen 1x1-convolution features (Gaussian memberships in K colour
centres found by k-means on training pixels), a mask-weighted global average pool (a soft
colour histogram) and a linear head fitted in closed form (ridge). Because the head is linear
on pooled features, Grad-CAM equals CAM, and the heatmap (head weights applied per pixel) is
computed inside the ONNX graph; its pixel mean plus the bias is the standardised prediction.
Geometric augmentation is a no-op for this model (per-pixel features, global pooling), so
there is none; colour is never augmented.

One model for children and adults (issue 11): the person's population (child / woman / man,
from the WHO group the bot asks) is a second input, a one-hot that selects the population's
head offset and the head weights of its capture domain (children: Ghana phones; adults: the
Eyes-defy LED device). The heads are fitted jointly as shared weights plus a penalised
per-domain deviation, so each domain borrows strength from the other. The head is still linear
in the pooled features for a given person, so Grad-CAM still equals CAM and the heatmap stays
in the graph. With `identity`, the colour channels themselves are also features: their pooled
value is the conjunctiva's mean colour (the mean-redness ratios carry most of the adult signal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from hbscreen.inference.modelcard import Preprocessing
from hbscreen.inference.preprocess import crop_box, regression_input

COLOUR_CHANNELS = {"lab_chroma": 6}  # colour channels per colour space (default 3)


@dataclass
class RegressorConfig:
    """Everything that defines a trained regressor. The colour variant is chosen per training
    set on inner group folds (training/crossval.py). centres/sigma were fixed on a development
    protocol that never sees outer fold 0's test items (inner 4-fold CV inside its training
    part; MAE/r: 64 centres, sigma 0.35: 1.68/0.26; 128, 0.35: 1.65/0.32; 128, 0.25:
    1.62/0.36; 256, 0.2: 1.57/0.37)."""

    size: tuple[int, int] = (24, 64)  # (height, width) of the input tensor
    colour: str = "lab"
    lightness_norm: bool = False
    glare_exclude: bool = True
    centres: int = 256  # colour centres (feature channels)
    sigma: float = 0.2  # width of each centre's Gaussian, in normalised colour units
    hist_channels: int = 3  # the first channels the colour centres live in
    identity: bool = False  # also pool the colour channels themselves (mean colour)
    balanced_centres: bool = False  # k-means pixels drawn equally from each capture domain
    # Separate features and head per capture domain: each domain gets `centres` colour centres
    # of its own pixels and a ridge head fitted on its own items (own penalty); the heads share
    # only the pooled colour channels' positions. One graph, the group input selects.
    domain_features: bool = False
    dark_exclude: float | None = None  # drop near-black pixels (max RGB below) from the mask
    # Populations of the group input (one-hot order) and the head (capture domain) of each;
    # empty: no group input (the single-population model of issue 3).
    populations: list[str] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)  # filled from training data
    std: list[float] = field(default_factory=list)

    def preprocessing(self) -> Preprocessing:
        n = COLOUR_CHANNELS.get(self.colour, 3)
        mean = self.mean or [0.0] * n
        std = self.std or [1.0] * n
        return Preprocessing(
            size=self.size,
            colour=self.colour,
            mean=mean,
            std=std,
            mask_channel=True,
            glare_exclude=self.glare_exclude,
            dark_exclude=self.dark_exclude,
            lightness_norm=self.lightness_norm,
            crop="mask_box_margin_0.08",
        )

    def to_dict(self) -> dict:
        return asdict(self)


def cutout_crop(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGBA cut-out -> (rgb crop, mask crop) exactly as inference/pipeline.py crops it."""
    mask = rgba[..., 3].astype(np.float32) / 255.0
    y0, y1, x0, x1 = crop_box(mask)
    return np.ascontiguousarray(rgba[y0:y1, x0:x1, :3]), mask[y0:y1, x0:x1]


def build_inputs(rgbas: Sequence[np.ndarray], cfg: RegressorConfig) -> np.ndarray:
    """N x C x H x W tensors made by inference's own regression_input on the crop inference
    would make, so training and serving cannot drift."""
    pre = cfg.preprocessing()
    return np.concatenate([regression_input(*cutout_crop(rgba), pre) for rgba in rgbas])


class MaskedFeatures(nn.Module):
    """Per-pixel colour features: Gaussian memberships of the pixel's colour in K learnt
    colour centres (a 1x1 convolution plus the squared norm), times mask / mean(mask).
    Global average pooling of this output is a soft colour histogram of the conjunctiva,
    whatever the crop's background or the mask's area. The Grad-CAM target layer."""

    def __init__(
        self,
        centres: np.ndarray,
        sigma: float,
        identity_channels: int = 0,
        widths: np.ndarray | None = None,
    ):
        super().__init__()
        self.identity_channels = int(identity_channels)
        c = torch.as_tensor(np.asarray(centres, np.float32))
        self.hist_channels = int(c.shape[1])
        self.n_centres = int(c.shape[0])
        inv = 1.0 / (2.0 * float(sigma) ** 2)
        # -|x - c|^2 / 2s^2 = (2 x.c - |c|^2 - |x|^2) * inv: a 1x1 conv and a channel sum.
        # With per-centre, per-channel `widths` (K x C sigmas: a capture domain's own colour
        # scale) the |x|^2 term becomes a second 1x1 conv on x*x.
        self.proj = nn.Conv2d(c.shape[1], max(1, c.shape[0]), 1)
        self.quad: nn.Conv2d | None = None
        if self.n_centres:
            if widths is None:
                with torch.no_grad():
                    self.proj.weight.copy_((2 * inv * c)[:, :, None, None])
                    self.proj.bias.copy_(-inv * (c * c).sum(1))
            else:
                iv = 1.0 / (2.0 * torch.as_tensor(np.asarray(widths, np.float32)) ** 2)
                self.quad = nn.Conv2d(c.shape[1], c.shape[0], 1, bias=False)
                with torch.no_grad():
                    self.proj.weight.copy_((2 * iv * c)[:, :, None, None])
                    self.proj.bias.copy_(-(iv * c * c).sum(1))
                    self.quad.weight.copy_((-iv)[:, :, None, None])
        self.register_buffer("inv", torch.tensor(inv))
        # max(mean mask, floor) exports as Max with a constant (clamp_min would export a Clip
        # whose bound onnx2torch cannot read, leaving the benchmark without an eager twin)
        self.register_buffer("floor", torch.tensor(1e-3))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour, mask = x[:, : self.hist_channels], x[:, -1:]
        scale = torch.maximum(mask.mean(dim=(2, 3), keepdim=True), self.floor)
        weight = mask / scale
        parts = []
        if self.n_centres:
            if self.quad is None:
                logits = self.proj(colour) - self.inv * (colour * colour).sum(1, keepdim=True)
            else:
                logits = self.proj(colour) + self.quad(colour * colour)
            parts.append(torch.exp(logits) * weight)
        if self.identity_channels:
            parts.append(x[:, : self.identity_channels] * weight)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    @property
    def out_channels(self) -> int:
        return self.n_centres + self.identity_channels


class HbNet(nn.Module):
    """Input N x (C+1) x H x W (colour channels + mask) and the population one-hot N x P ->
    standardised Hb, N x 1: conv features -> global average pooling -> the population's
    linear head (weights `head_weight[p]`, offset `head_bias[p]`)."""

    def __init__(
        self,
        centres: np.ndarray,
        sigma: float,
        identity_channels: int = 0,
        populations: int = 1,
        widths: np.ndarray | None = None,
    ):
        super().__init__()
        self.features = MaskedFeatures(centres, sigma, identity_channels, widths)
        k = self.features.out_channels
        self.head_weight = nn.Parameter(torch.zeros(max(1, populations), k))
        self.head_bias = nn.Parameter(torch.zeros(max(1, populations)))
        self.populations = max(1, populations)

    def _group(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        if g is None:
            return torch.ones(x.shape[0], 1, dtype=x.dtype)
        return g

    def weights(self, g: torch.Tensor) -> torch.Tensor:
        """N x K head weights of each item's population."""
        return g @ self.head_weight

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        g = self._group(x, g)
        pooled = self.features(x).mean(dim=(2, 3))
        return (pooled * self.weights(g)).sum(1, keepdim=True) + (g @ self.head_bias)[:, None]

    def pooled(self, x: np.ndarray, batch: int = 128) -> np.ndarray:
        """N x C x H x W -> N x K pooled features (the head's input)."""
        out = []
        with torch.no_grad():
            for b in range(0, len(x), batch):
                xb = torch.from_numpy(np.ascontiguousarray(x[b : b + batch]))
                out.append(self.features(xb).mean(dim=(2, 3)).numpy())
        return np.concatenate(out).astype(np.float64)


class HbWithHeatmap(nn.Module):
    """Export wrapper: hb in g/dL (de-standardised in the graph) and the CAM heatmap, signed,
    in g/dL (its mean over the image is hb - y_mean - population offset * y_std). The
    features are 1x1 convolutions, so the heatmap is already at input resolution. With a
    group input the graph takes (crop, group); without, crop only."""

    def __init__(self, net: HbNet, y_mean: float, y_std: float, with_group: bool):
        super().__init__()
        self.net = net
        self.with_group = with_group
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    def forward(
        self, x: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = g if self.with_group and g is not None else torch.ones(1, 1)
        f = self.net.features(x)
        w = g @ self.net.head_weight  # N x K
        z = (f.mean(dim=(2, 3)) * w).sum(1, keepdim=True) + (g @ self.net.head_bias)[:, None]
        hb = z * self.y_std + self.y_mean
        cam = (f * w[:, :, None, None]).sum(1, keepdim=True)
        return hb, cam * self.y_std


class WithFixedGroup(nn.Module):
    """The torch model for one population, taking the crop only (what pytorch-grad-cam needs)."""

    def __init__(self, net: HbNet, g: torch.Tensor):
        super().__init__()
        self.net = net
        self.features = net.features
        self.register_buffer("g", g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.g.expand(x.shape[0], -1))


@dataclass
class TrainedRegressor:
    net: HbNet
    cfg: RegressorConfig
    y_mean: float
    y_std: float
    alpha: float = 0.0
    # Operating point: refer below cut-off + margin (g/dL), chosen on the inner out-of-fold
    # predictions of this model's own training items (training/crossval.py select_and_fit).
    referral_margin: float | None = None
    population_margins: dict[str, float] = field(default_factory=dict)
    chosen_per_population: dict[str, str] = field(default_factory=dict)

    def group_matrix(self, pops: Sequence[str] | None, n: int) -> np.ndarray:
        """Population names -> N x P one-hot (ones for a model without group input)."""
        return group_matrix(self.cfg, pops, n)

    def predict(self, x: np.ndarray, pops: Sequence[str] | None = None) -> np.ndarray:
        """N x C x H x W (+ populations) -> Hb in g/dL (the torch model; the ONNX graph
        computes the same)."""
        self.net.eval()
        g = torch.from_numpy(self.group_matrix(pops, len(x)))
        with torch.no_grad():
            z = self.net(torch.from_numpy(np.ascontiguousarray(x)), g).numpy().reshape(-1)
        return z * self.y_std + self.y_mean

    def export_module(self) -> HbWithHeatmap:
        return HbWithHeatmap(self.net, self.y_mean, self.y_std, bool(self.cfg.populations)).eval()


def group_matrix(cfg: RegressorConfig, pops: Sequence[str] | None, n: int) -> np.ndarray:
    if not cfg.populations:
        return np.ones((n, 1), np.float32)
    if pops is None or len(pops) != n:
        raise ValueError("this model takes each item's population")
    g = np.zeros((n, len(cfg.populations)), np.float32)
    for i, p in enumerate(pops):
        g[i, cfg.populations.index(p)] = 1.0
    return g


def colour_centres(
    x: np.ndarray,
    k: int,
    seed: int,
    n_pixels: int = 20000,
    channels: int = 3,
    domain: np.ndarray | None = None,
) -> np.ndarray:
    """K-means centres of masked training pixels (unsupervised; labels are not used). With
    `domain` (one label per item), the pixels are drawn equally from each capture domain, so
    the 413 children's phone colours and the adults' LED colours get centres alike."""
    from sklearn.cluster import KMeans

    if k == 0:
        return np.zeros((0, channels), np.float32)
    rng = np.random.default_rng(seed)
    doms = [None] if domain is None else sorted(set(domain.tolist()))
    subs = []
    for d in doms:
        xs = x if d is None else x[domain == d]
        m = xs[:, -1] > 0.5
        px = np.moveaxis(xs[:, :channels], 1, -1)[m]
        take = min(n_pixels // len(doms), len(px))
        subs.append(px[rng.choice(len(px), take, replace=False)])
    sub = np.concatenate(subs)
    return KMeans(k, n_init=1, random_state=seed).fit(sub).cluster_centers_.astype(np.float32)


# Population offsets are scaled up in the ridge design so the penalty barely touches them: the
# prior of a population is its data's mean, shrinkage is for the colour weights.
OFFSET_SCALE = 30.0
# Scale of the per-domain deviation columns (1: penalised like the shared weights).
DEVIATION_SCALE = 1.0


def make_net(
    x: np.ndarray, cfg: RegressorConfig, seed: int, pops: Sequence[str] | None = None
) -> HbNet:
    """The frozen features for a training set (k-means centres of its pixels, drawn equally
    from each capture domain with `balanced_centres`) and an empty head."""
    torch.manual_seed(seed)
    n_colour = x.shape[1] - 1
    ch = min(cfg.hist_channels, n_colour)
    if cfg.domain_features and cfg.populations and pops is not None:
        dom = item_domains(cfg, pops)
        parts, widths = [], []
        for h in range(n_domains(cfg)):
            xs = x[dom == h] if (dom == h).any() else x  # no items of a domain: all pixels
            # the domain's own colour scale: centres and widths found in its standardised
            # coordinates, then mapped back to the card's (pooled) normalisation
            m = xs[:, -1] > 0.5
            px = np.moveaxis(xs[:, :ch], 1, -1)[m]
            mu, sd = px.mean(axis=0), np.maximum(px.std(axis=0), 1e-3)
            xd = xs.copy()
            xd[:, :ch] = (xs[:, :ch] - mu[None, :, None, None] * xs[:, -1:]) / sd[
                None, :, None, None
            ]
            c = colour_centres(xd, cfg.centres, seed + h, channels=ch)
            parts.append(mu + c * sd)
            widths.append(np.tile(cfg.sigma * sd, (len(c), 1)))
        return HbNet(
            np.concatenate(parts),
            cfg.sigma,
            identity_channels=n_colour if cfg.identity else 0,
            populations=len(cfg.populations),
            widths=np.concatenate(widths),
        )
    domain = None
    if cfg.balanced_centres and cfg.populations and pops is not None:
        heads = cfg.heads or [0] * len(cfg.populations)
        domain = np.array([heads[cfg.populations.index(p)] for p in pops])
        if len(set(domain.tolist())) < 2:
            domain = None
    centres = colour_centres(
        x, cfg.centres, seed, channels=min(cfg.hist_channels, n_colour), domain=domain
    )
    return HbNet(
        centres,
        cfg.sigma,
        identity_channels=n_colour if cfg.identity else 0,
        populations=len(cfg.populations) or 1,
    )


def n_domains(cfg: RegressorConfig) -> int:
    return (max(cfg.heads) + 1) if cfg.heads else 1


def item_domains(cfg: RegressorConfig, pops: Sequence[str]) -> np.ndarray:
    heads = cfg.heads or [0] * len(cfg.populations)
    return np.array([heads[cfg.populations.index(p)] for p in pops])


def _fit_domain_heads(
    f: np.ndarray, z: np.ndarray, cfg: RegressorConfig, pops: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per capture domain: a ridge (penalty by GCV on the domain's own items) on that domain's
    centre block + the pooled colour channels, with an offset per population of the domain.
    A domain without items (leave-one-site-out) gets a head fitted on all items over its
    block, its populations the mean offset. Returns (P x K weights, P offsets, mean alpha)."""
    from sklearn.linear_model import RidgeCV

    n_pop, k = len(cfg.populations), f.shape[1]
    n_dom = n_domains(cfg)
    heads = np.asarray(cfg.heads or [0] * n_pop)
    n_ident = (COLOUR_CHANNELS.get(cfg.colour, 3)) if cfg.identity else 0
    per = (k - n_ident) // n_dom
    dom = item_domains(cfg, pops)
    pop_idx = np.array([cfg.populations.index(p) for p in pops])
    weight, bias, alphas = np.zeros((n_pop, k)), np.zeros(n_pop), []
    for h in range(n_dom):
        cols = np.r_[np.arange(h * per, (h + 1) * per), np.arange(k - n_ident, k)]
        rows = np.flatnonzero(dom == h)
        empty = rows.size == 0
        if empty:
            rows = np.arange(len(z))
        fh = f[np.ix_(rows, cols)]
        fm, fs = fh.mean(axis=0), fh.std(axis=0) + 1e-6
        own = sorted(set(pop_idx[rows].tolist()))
        g = (pop_idx[rows][:, None] == np.array(own)[None]).astype(np.float64)
        ridge = RidgeCV(alphas=np.logspace(-1, 4, 16), fit_intercept=False)
        ridge.fit(np.hstack([(fh - fm) / fs, g * OFFSET_SCALE]), z[rows])
        alphas.append(float(ridge.alpha_))
        w = ridge.coef_[: len(cols)] / fs
        off = ridge.coef_[len(cols) :] * OFFSET_SCALE - (w * fm).sum()
        for p in np.flatnonzero(heads == h):
            weight[p, cols] = w
            bias[p] = off[own.index(p)] if (p in own and not empty) else float(off.mean())
    return weight, bias, float(np.mean(alphas))


def train_regressor(
    x: np.ndarray,
    y: np.ndarray,
    cfg: RegressorConfig,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    pops: Sequence[str] | None = None,
    net: HbNet | None = None,
    pooled: np.ndarray | None = None,
) -> TrainedRegressor:
    """Fit on N x C x H x W inputs (already normalised with cfg.mean/std): colour centres by
    k-means, then a ridge head on standardised pooled features and a standardised target,
    its penalty chosen by leave-one-out (GCV) inside the training data. With populations,
    the design is [shared features, features x domain indicator per head, population
    offsets]; the per-domain deviations are penalised like the shared weights, so a domain
    departs from the shared colour model only as far as its data asks. The standardisation is
    folded into the heads, so the graph stays conv -> GAP -> linear."""
    from sklearn.linear_model import RidgeCV

    torch.manual_seed(seed)
    y = np.asarray(y, dtype=np.float64)
    y_mean, y_std = float(y.mean()), float(y.std() + 1e-9)
    if progress:
        progress("colour centres")
    net = net or make_net(x, cfg, seed, pops)
    if progress:
        progress("pooled features")
    f = net.pooled(x) if pooled is None else pooled
    if cfg.domain_features and cfg.populations:
        weight, bias, alpha = _fit_domain_heads(f, (y - y_mean) / y_std, cfg, pops or [])
        with torch.no_grad():
            net.head_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            net.head_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        net.eval()
        return TrainedRegressor(net, cfg, y_mean, y_std, alpha)
    fm, fs = f.mean(axis=0), f.std(axis=0) + 1e-6
    fz = (f - fm) / fs
    k = f.shape[1]
    n_pop = len(cfg.populations)
    if n_pop:
        g = group_matrix(cfg, pops, len(y)).astype(np.float64)
        heads = np.asarray(cfg.heads or [0] * n_pop)
        n_heads = int(heads.max()) + 1
        hg = np.stack([g[:, heads == h].sum(1) for h in range(n_heads)], 1)  # N x H
        dev = DEVIATION_SCALE
        blocks = [fz] + ([fz * hg[:, [h]] * dev for h in range(n_heads)] if n_heads > 1 else [])
        design = np.hstack([*blocks, g * OFFSET_SCALE])
    else:
        design = fz
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 16), fit_intercept=not n_pop)
    ridge.fit(design, (y - y_mean) / y_std)
    coef = ridge.coef_
    if n_pop:
        shared = coef[:k]
        w = np.tile(shared, (n_pop, 1))
        if n_heads > 1:
            for p in range(n_pop):
                h = heads[p]
                w[p] += coef[k * (1 + h) : k * (2 + h)] * dev
        offsets = coef[-n_pop:] * OFFSET_SCALE
        weight = w / fs
        bias = offsets - (w * fm / fs).sum(1)
    else:
        weight = (coef / fs)[None]
        bias = np.array([float(ridge.intercept_ - (coef * fm / fs).sum())])
    with torch.no_grad():
        net.head_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        net.head_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    net.eval()
    return TrainedRegressor(net, cfg, y_mean, y_std, float(ridge.alpha_))


def masked_colour_stats(raw: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over masked pixels of un-normalised N x C x H x W inputs (made
    with mean 0 / std 1)."""
    x = raw
    m = x[:, -1] > 0.5
    v = np.moveaxis(x[:, :-1], 1, -1)[m]
    return (
        [round(float(a), 5) for a in v.mean(axis=0)],
        [round(float(a), 5) for a in np.maximum(v.std(axis=0), 1e-3)],
    )


def renormalise(raw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inputs made with mean 0 / std 1 -> the tensors regression_input makes with (mean, std):
    ((x - mean) / std) * m equals (x*m - mean*m) / std, channel-wise, the mask kept last."""
    out = raw.copy()
    shape = [1] * raw.ndim
    shape[-3] = len(mean)
    mu = np.asarray(mean, np.float32).reshape(shape)
    sd = np.asarray(std, np.float32).reshape(shape)
    m = raw[..., -1:, :, :]
    out[..., :-1, :, :] = (raw[..., :-1, :, :] - mu * m) / sd
    return out
