"""Media quality policy (sans-I/O): stream allocation, dynacast, connection quality.

- Stream allocator (livekit pkg/sfu/streamallocator): a subscriber's bandwidth estimate (REMB)
  is handed out in rounds, layer 0 for every video track first, then layer 1, then 2, in
  priority order (screen share first); a track never drops below layer 0 (LiveKit's default),
  unless the subscriber allows pausing (subscriber_allow_pause / rtc.congestion_control.allow_pause):
  then a track whose lowest layer does not fit is paused, for at least 5 s (PausedMinWait).
- Dynacast (pkg/rtc/dynacast): the highest layer any subscriber wants, per published track;
  upgrades go out at once, downgrades after 5 s; 10 s after publishing an update is sent even
  with nobody subscribed, so unwatched layers stop.
- Connection quality (pkg/sfu/connectionquality/scorer.go): 100 - delay effect - loss effect -
  35 per layer below the wanted one, smoothed, mapped to EXCELLENT / GOOD / POOR / LOST, and the
  MOS-like score LiveKit reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from livekit.protocol import models as pm

DYNACAST_DOWNGRADE_DELAY = 5.0
DYNACAST_INITIAL_WAIT = 10.0
OFF = -1


@dataclass
class AllocationTrack:
    """What the allocator needs to know of one subscribed video track."""

    key: object
    desired: int  # the layer the subscriber's view wants (-1: paused)
    layer_bitrates: list[float]  # bits/s per layer (0 when the layer is not sent)
    priority: int = 0  # higher first (screen share)


def allocate(capacity: float, tracks: list[AllocationTrack], audio_bitrate: float = 0.0,
             allow_pause: bool = False) -> dict[object, int]:
    """Layer per track for a subscriber with `capacity` bits/s; with `allow_pause` a track whose
    lowest layer does not fit gets OFF (paused) instead of layer 0."""
    remaining = capacity - audio_bitrate
    out: dict[object, int] = {t.key: OFF for t in tracks}
    spent: dict[object, float] = {t.key: 0.0 for t in tracks}
    ordered = sorted(tracks, key=lambda t: -t.priority)
    for layer in range(3):
        for t in ordered:
            if t.desired < layer or layer >= len(t.layer_bitrates) or t.layer_bitrates[layer] <= 0:
                continue
            cost = t.layer_bitrates[layer] - spent[t.key]
            if (layer == 0 and not allow_pause) or cost <= remaining:
                out[t.key] = layer
                remaining -= cost
                spent[t.key] = t.layer_bitrates[layer]
    for t in ordered:  # without pausing, never below layer 0 while something is sent
        unmeasured = not any(rate > 0 for rate in t.layer_bitrates)  # nothing to weigh yet
        if out[t.key] == OFF and t.desired >= 0 and (not allow_pause or unmeasured):
            out[t.key] = 0
    return out


def deficient(tracks: list[AllocationTrack], allocation: dict[object, int]) -> Optional[float]:
    """The extra bits/s the next upgrade needs, or None when everyone has what they want."""
    best: Optional[float] = None
    for t in tracks:
        have = allocation.get(t.key, OFF)
        up = have + 1
        if have >= t.desired or up >= len(t.layer_bitrates) or t.layer_bitrates[up] <= 0:
            continue
        step = t.layer_bitrates[up] - (t.layer_bitrates[have] if have >= 0 else 0)
        best = step if best is None else min(best, step)
    return best


TREND_SAMPLES = 8
CONGESTED_TAU = -0.6
CONGESTION_USAGE = 0.95


def kendall_tau(values: list[float]) -> float:
    """Kendall's tau of values against their order, ties left out: -1 falling .. 1 rising.

    REMB often holds a value for several reports and then steps: tied pairs would dilute a
    clear step down below the congestion threshold."""
    n = len(values)
    if n < 2:
        return 0.0
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if values[j] > values[i]:
                concordant += 1
            elif values[j] < values[i]:
                discordant += 1
    pairs = concordant + discordant
    return (concordant - discordant) / pairs if pairs else 0.0


HEAVY_LOSS = 0.1  # a subscriber losing this much of its video for HEAVY_LOSS_FOR s is congested
HEAVY_LOSS_FOR = 1.0
LOSS_CAPACITY = 0.9  # then capacity is what still arrives, less a margin
RECOVERY_HOLD = 2.0  # seconds without congestion before capacity is raised again
RECOVERY_STEP = 1.4  # each raise: +40 %
RECOVERY_MAX_HOLD = 16.0
TRIAL_FAILED = 0.85


@dataclass
class ChannelObserver:
    """A subscriber link's capacity as the stream allocator commits it (LiveKit's remotebwe).

    REMB values from libwebrtc start low and rise slowly (its AIMD never goes above 1.5 x what
    it receives), so a low REMB alone is not congestion: capacity is committed when the
    estimate trends down below what is being sent, or when the subscriber's receiver reports
    show heavy loss while the estimate is below what is sent (an estimate still ramping up
    when the link overflows may only stop rising). Afterwards capacity is raised by 40 % after
    every few quiet seconds (a trial upgrade: a link that cannot carry it makes the estimate fall
    again, and capacity goes back to where the trial started), with the wait doubling after a
    trial that ends in congestion."""

    capacity: float = float("inf")
    samples: list[float] = field(default_factory=list)
    last_congestion: float = 0.0
    last_raise: float = 0.0
    hold: float = RECOVERY_HOLD
    trial_estimate: float = 0.0  # the estimate when capacity was last raised
    lossy_since: float = 0.0  # since when the subscriber reports heavy loss (0: it does not)
    trial_from: float = 0.0  # the capacity before the last raise

    def update(self, estimate: float, expected_usage: float, now: float, loss: float = 0.0) -> bool:
        """Feed one REMB (and the loss fraction of the subscriber's latest receiver reports);
        returns True when the committed capacity changed."""
        self.samples.append(estimate)
        del self.samples[:-TREND_SAMPLES]
        if loss < HEAVY_LOSS:
            self.lossy_since = 0.0
        elif not self.lossy_since:
            self.lossy_since = now
        # after a trial raise the estimate lags what is now sent: only a fall below where it
        # stood before the trial says the link cannot carry it
        in_trial = bool(self.last_raise) and now - self.last_raise < 2 * self.hold
        over = estimate < CONGESTION_USAGE * expected_usage
        falling = len(self.samples) >= 4 and kendall_tau(self.samples) < CONGESTED_TAU and estimate < self.capacity \
            and (not in_trial or estimate < TRIAL_FAILED * self.trial_estimate)
        # an estimate still ramping up from its low start does not fall when the link overflows;
        # the losses the subscriber reports say it: what arrives is about usage x (1 - loss)
        lossy = bool(self.lossy_since) and now - self.lossy_since >= HEAVY_LOSS_FOR
        if over and (falling or lossy):
            if in_trial:
                self.hold = min(2 * self.hold, RECOVERY_MAX_HOLD)  # the last trial was too much
            capacity = max(estimate, LOSS_CAPACITY * expected_usage * (1 - loss)) if lossy else estimate
            if in_trial:  # a raise that failed: back to where it was tried from, no lower
                capacity = max(capacity, self.trial_from)
            if capacity < self.capacity:
                self.capacity = capacity
                self.samples.clear()
                self.lossy_since = 0.0
                self.last_congestion = now
                return True
        if self.capacity == float("inf"):
            return False
        if estimate > 1.1 * self.capacity:
            self.capacity = estimate
            return True
        if now - max(self.last_congestion, self.last_raise) >= self.hold:
            self.trial_from = self.capacity
            self.capacity *= RECOVERY_STEP
            self.last_raise = now
            self.trial_estimate = estimate
            if self.capacity > 50e6:
                self.capacity, self.hold = float("inf"), RECOVERY_HOLD
            return True
        return False


@dataclass
class DynacastState:
    """The layers a published track's subscribers want, as last told to its publisher."""

    published_at: float
    sent: Optional[int] = None  # max layer last sent (None: never)
    pending: Optional[int] = None  # a downgrade waiting for its delay
    pending_since: float = 0.0

    def update(self, wanted: int, now: float) -> Optional[int]:
        """The max layer to send to the publisher now, or None to send nothing."""
        if self.sent is None:
            if wanted == OFF and now - self.published_at < DYNACAST_INITIAL_WAIT:
                return None
            self.sent = wanted
            self.pending = None
            return wanted
        if wanted > self.sent:
            self.sent, self.pending = wanted, None
            return wanted
        if wanted == self.sent:
            self.pending = None
            return None
        if self.pending != wanted:
            self.pending, self.pending_since = wanted, now
            return None
        if now - self.pending_since >= DYNACAST_DOWNGRADE_DELAY:
            self.sent, self.pending = wanted, None
            return wanted
        return None


def subscribed_quality_update(track: pm.TrackInfo, codec_mime: str, max_layer: int):
    """SubscribedQualityUpdate for a track: qualities up to `max_layer` enabled."""
    from livekit.protocol import rtc as pr

    qualities = sorted({v.quality for v in track.layers} or {pm.VideoQuality.LOW, pm.VideoQuality.MEDIUM,
                                                              pm.VideoQuality.HIGH})
    subscribed = [pr.SubscribedQuality(quality=q, enabled=max_layer != OFF and i <= max_layer)
                  for i, q in enumerate(qualities)]
    # the client matches the codec against its own lower-case name without the kind prefix
    codec = codec_mime.split("/", 1)[-1].lower()
    return pr.SubscribedQualityUpdate(track_sid=track.sid, subscribed_qualities=subscribed,
                                      subscribed_codecs=[pr.SubscribedCodec(codec=codec, qualities=subscribed)])


LOSS_WEIGHT_VIDEO = 10.0
LOSS_WEIGHT_OPUS = 8.0
LOSS_WEIGHT_RED = 4.0
FEC_DIVISOR = 1.5  # opus in-band FEC hides some loss
SCORE_FLOOR = 30.0  # loss and delay alone never make a connection LOST


def loss_weight(codec_name: str, inband_fec: bool = True) -> float:
    """How much a percent of loss costs a track of this codec (LiveKit's scorer weights)."""
    name = codec_name.lower().split("/")[-1]
    if name == "red":
        weight = LOSS_WEIGHT_RED
    elif name == "opus":
        weight = LOSS_WEIGHT_OPUS
    else:
        return LOSS_WEIGHT_VIDEO
    return weight / FEC_DIVISOR if inband_fec else weight


@dataclass
class LossWindow:
    """The loss fraction over one quality window, from cumulative (expected, lost) packet counts
    (our receive statistics for a publisher's stream, the RR's highest sequence and cumulative
    loss for a subscriber's)."""

    expected: int = -1
    lost: int = 0

    def take(self, expected: int, lost: int) -> float | None:
        """Loss since the previous call; None on the first call or when nothing was expected."""
        first = self.expected < 0
        d_expected, d_lost = expected - self.expected, lost - self.lost
        self.expected, self.lost = expected, lost
        if first or d_expected <= 0:
            return None
        return min(max(d_lost / d_expected, 0.0), 1.0)


@dataclass
class QualityScorer:
    """One participant's connection quality over 5 s windows (LiveKit's simplified E-model:
    packet score from loss and jitter, layer score from the distance to the wanted layer, the
    worst track counts, smoothed 0.4 rising / 0.8 falling, mapped to the four categories)."""

    score: float = 100.0
    quality: int = pm.ConnectionQuality.EXCELLENT
    samples: list[float] = field(default_factory=list)

    def add(self, loss_fraction: float, jitter_ms: float, layer_distance: int = 0,
            weight: float = LOSS_WEIGHT_VIDEO) -> None:
        delay = 2 * jitter_ms
        delay_effect = delay / 40 if delay <= 160 else (delay - 120) / 10
        loss_effect = loss_fraction * 100 * weight
        self.samples.append(100 - delay_effect - loss_effect - 35 * max(layer_distance, 0))

    def window(self) -> int:
        """Close a window; returns the new quality category."""
        raw = min(self.samples) if self.samples else self.score
        self.samples.clear()
        factor = 0.4 if raw > self.score else 0.8
        self.score = max(SCORE_FLOOR, factor * self.score + (1 - factor) * raw)
        s = self.score
        self.quality = (pm.ConnectionQuality.EXCELLENT if s > 80 else pm.ConnectionQuality.GOOD if s > 40
                        else pm.ConnectionQuality.POOR if s > 20 else pm.ConnectionQuality.LOST)
        return self.quality

    @property
    def mos(self) -> float:
        s = self.score
        return min(4.5, 1 + 0.035 * s + 7e-6 * s * (s - 60) * (100 - s))
