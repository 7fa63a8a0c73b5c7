"""resnest_gluon.training.health: the signs of a run that is not learning, on loss and accuracy sequences."""
from resnest_gluon.training.health import ZERO_SCORE, LearningWatch


def kinds(watch, epochs):
    """Feeds (loss, val_top1, val_images) per epoch; returns {epoch: [kinds found then]}."""
    return {e: [f.kind for f in watch.update(e, *row)] for e, row in enumerate(epochs, 1)}


def test_a_learning_run_raises_nothing():
    watch = LearningWatch(num_classes=10, warmup_epochs=1, num_epochs=8, effective_lr=0.025)
    losses = [2.2, 1.6, 1.2, 0.9, 0.8, 0.7, 0.65, 0.6]
    found = kinds(watch, [(loss, 0.3 + 0.08 * e, 360) for e, loss in enumerate(losses)])
    assert all(v == [] for v in found.values()) and watch.findings == []


def test_the_too_high_lr_run_of_the_issue_is_caught_rising_then_at_chance():
    # issue 14: batch 32, lr 0.1 on 1,400 images: loss 5.0 in epoch 2, then ln(10), validation at chance (8.9%)
    watch = LearningWatch(num_classes=10, warmup_epochs=1, num_epochs=8, effective_lr=0.2)
    found = kinds(watch, [(2.6, 0.11, 360), (5.0, 0.09, 360), (2.31, 0.089, 360), (2.30, 0.10, 360)])
    assert found[1] == []  # warm-up: no verdict
    assert found[2] == ["loss_rising", "val_chance"]
    assert found[3] == []  # each sign once
    message = watch.findings[0].message
    assert "effective lr 0.2" in message and "--min-random-area" in message and "epoch 2" in message


def test_a_flat_loss_is_reported_after_the_patience():
    watch = LearningWatch(num_classes=100, warmup_epochs=0, num_epochs=30, effective_lr=0.1)
    losses = [4.0, 3.5, 3.2, 3.2, 3.21, 3.19, 3.2]  # patience max(3, 30 // 10) = 3
    found = kinds(watch, [(loss, None, None) for loss in losses])
    assert [e for e, v in found.items() if v] == [6] and found[6] == ["loss_flat"]


def test_chance_takes_the_number_of_validation_images_into_account():
    few, many = (LearningWatch(num_classes=2, warmup_epochs=0, num_epochs=5, effective_lr=0.1) for _ in range(2))
    assert [f.kind for f in few.update(1, 0.6, 0.62, 20)] == ["val_chance"]  # 62% of 20 images: luck
    assert many.update(1, 0.6, 0.62, 2000) == []  # 62% of 2000: learning


def test_a_score_without_a_chance_level_is_caught_at_zero_after_warm_up_only():
    # detection: validation VOC07 mAP has no chance level; zero is what a detector that learned nothing scores
    from resnest_gluon.training.detection import DetectionConfig, DetectionTask
    from resnest_gluon.training.optim import learning_rate
    from resnest_gluon.training.trainer import RunConfig

    task = DetectionTask(DetectionConfig())
    task.warmup_epochs = 1  # as optimizer() sets it from --lr-warmup
    assert task.watch_values({"loss": 1.0, "val_voc07_map": 0.0, "val_coco_map": 0.0, "val_images": 4}) == (0.0, 4)

    def watch():
        return task.learning_watch(RunConfig("x.rec", num_epochs=20), learning_rate(0.01, 2, 1, 8))

    zero = watch()
    found = kinds(zero, [(2.0, 0.0, 4), (1.8, 0.0, 4), (1.6, 0.0, 4)])
    assert found == {1: [], 2: ["val_zero"], 3: []}  # not during warm-up; then once
    message = zero.findings[0].message
    assert "not learning at epoch 2: validation VOC07 mAP 0 is zero over 4 images" in message
    assert "--lr" in message and "python -m recordio_tools check PREFIX" in message
    assert [f.kind for f in watch().update(2, 1.0, ZERO_SCORE / 2, 120)] == ["val_zero"]  # within the epsilon
    assert watch().update(2, 1.0, 0.3, 4) == []  # learning
    assert watch().update(2, 1.0, 0.014, 120) == []  # learning a little (400 images from scratch): not zero
    assert watch().update(2, 1.0, None, None) == []  # no validation this epoch
    unwatched = LearningWatch(num_classes=None, warmup_epochs=0, num_epochs=20, effective_lr=0.01)
    assert unwatched.update(1, 1.0, 0.0, 4) == []  # no named score (segmentation): its validation is not watched
