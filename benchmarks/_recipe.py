"""The training step both frameworks time: the official ResNeSt recipe's optimizer, the same numbers on every side.

Framework-free (the timm worker reads it without MXNet). NAG = SGD with Nesterov momentum; the learning rate is the
recipe's 0.05 per 128 images scaled linearly to the timed batch, so random-label steps stay finite while timed.
"""

OPTIMIZER = "nag"       # gluon.Trainer's name; timm: torch.optim.SGD(nesterov=True)
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4     # on every parameter (the recipe's no-wd on BN/biases changes no kernel, hence no speed)
# No DropBlock on any side (ours and timm have none by default; the GluonCV worker sets its 0.1 to 0): the same
# network is timed everywhere.
LR_PER_128 = 0.05


def learning_rate(batch_size):
    return LR_PER_128 * batch_size / 128


# the recipe as recorded in compare.json
DESCRIPTION = {"optimizer": "NAG (gluon.Trainer 'nag'; torch.optim.SGD nesterov=True)", "momentum": MOMENTUM,
               "weight_decay": WEIGHT_DECAY, "learning_rate": f"{LR_PER_128} x batch / 128",
               "loss": "softmax cross-entropy on random labels (gluon SoftmaxCrossEntropyLoss; torch CrossEntropyLoss)",
               "dropblock": "none on any side (GluonCV's built-in 0.1 for resnest26 and up is set to 0)"}
