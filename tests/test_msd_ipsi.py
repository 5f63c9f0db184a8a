"""IPSI (Eq. 2) and momentum self-distillation (Eqs. 3–6) — unit level."""

from __future__ import annotations

import torch

from urbanln_bench.clip_training.ipsi import stretch_positional_embedding, stretched_length
from urbanln_bench.clip_training.msd import FeatureQueue, MomentumDistiller, msd_loss


def test_ipsi_77_to_248_by_the_formula():
    pe = torch.randn(77, 16, generator=torch.Generator().manual_seed(0))
    new = stretch_positional_embedding(pe, keep=20, ratio=4)
    assert new.shape == (248, 16) == (stretched_length(77), 16)
    assert torch.equal(new[:20], pe[:20])
    for i in (0, 17, 55):
        for k in range(4):
            expected = (1 - k / 4) * pe[20 + i] + (k / 4) * pe[21 + i]
            torch.testing.assert_close(new[20 + 4 * i + k], expected)
    for k in range(4):
        torch.testing.assert_close(new[244 + k], pe[76] + (k / 4) * (pe[76] - pe[75]))
    torch.testing.assert_close(new[20 + 4 * 3], pe[23])  # k = 0 rows are the original rows


def _features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_distillation_is_zero_when_teacher_equals_student():
    v, t = _features(6, 8, 0), _features(6, 8, 1)
    queue_v, queue_t = _features(10, 8, 2), _features(10, 8, 3)
    losses = msd_loss(v, t, v, t, queue_v, queue_t, torch.tensor(0.07), mu=0.5)
    assert abs(float(losses.distillation)) < 1e-6
    assert float(losses.contrastive) > 0
    torch.testing.assert_close(losses.total, 0.5 * losses.contrastive + 0.5 * losses.distillation)


def test_contrastive_matches_eq4_by_hand():
    v, t = _features(3, 4, 0), _features(3, 4, 1)
    v_m, t_m = _features(3, 4, 2), _features(3, 4, 3)
    qv, qt = _features(2, 4, 4), _features(2, 4, 5)
    tau = torch.tensor(0.1)
    losses = msd_loss(v, t, v_m, t_m, qv, qt, tau, mu=0.0)
    all_t, all_v = torch.cat([t_m, qt]), torch.cat([v_m, qv])
    total = 0.0
    for i in range(3):
        p_i2t = torch.exp(v[i] @ all_t[i] / tau) / torch.exp(v[i] @ all_t.T / tau).sum()
        p_t2i = torch.exp(t[i] @ all_v[i] / tau) / torch.exp(t[i] @ all_v.T / tau).sum()
        total += torch.log(p_i2t) + torch.log(p_t2i)
    torch.testing.assert_close(losses.total, -total / 6)


def test_queue_wraps_across_batches():
    queue = FeatureQueue(5, 2)
    batches = [torch.full((3, 2), float(i)) for i in range(1, 4)]
    queue.push(batches[0])
    assert len(queue.current()) == 3
    queue.push(batches[1])  # fills to 5, wraps one row to the front
    assert len(queue.current()) == 5 and int(queue.pointer) == 1
    assert queue.features[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0, 2.0]
    queue.push(batches[2])
    assert queue.features[:, 0].tolist() == [2.0, 3.0, 3.0, 3.0, 2.0] and int(queue.pointer) == 4
    queue.push(torch.arange(14, dtype=torch.float32).view(7, 2))  # larger than the queue
    assert len(queue.current()) == 5


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(4, 3)
        self.text = torch.nn.Embedding(10, 3)

    def encode_image(self, x):
        return self.image(x)

    def encode_text(self, tokens):
        return self.text(tokens).mean(dim=1)


def test_gradients_reach_only_the_student_and_teacher_follows_ema():
    torch.manual_seed(0)
    student = _Tiny()
    distiller = MomentumDistiller(student, 3, queue_size=8, momentum=0.9)
    optimiser = torch.optim.SGD(list(student.parameters()) + [distiller.log_temperature], lr=0.5)
    images, texts = torch.randn(4, 4), torch.randint(0, 10, (4, 5))
    before = [p.clone() for p in distiller.teacher.parameters()]
    losses = distiller.loss(student, images, texts)
    losses.total.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert distiller.log_temperature.grad is not None
    optimiser.step()
    distiller.after_step(student)
    for b, t, s in zip(before, distiller.teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s.detach())
    assert len(distiller.image_queue.current()) == 4
