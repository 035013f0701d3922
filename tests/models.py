"""Small models the tests track: one of each kind of weight the book meets."""

import torch
from torch import nn


def mlp(seed: int = 0, widths=(12, 32, 32, 5)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for d_in, d_out in zip(widths, widths[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):  # (batch, 1, 8, 8)
        x = torch.relu(self.bn(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class SmallLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):  # (batch, time, 8)
        h, _ = self.lstm(x)
        return self.out(h[:, -1])


class SmallTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.layer = nn.TransformerEncoderLayer(
            16, 4, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.unembed = nn.Linear(16, 20)

    def forward(self, tokens):  # (batch, time)
        return self.unembed(self.layer(self.embed(tokens))[:, -1])


def batch_for(model: nn.Module, n: int = 16):
    """Inputs and targets that fit ``model``."""
    if isinstance(model, SmallCNN):
        return torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))
    if isinstance(model, SmallLSTM):
        return torch.randn(n, 5, 8), torch.randint(0, 4, (n,))
    if isinstance(model, SmallTransformer):
        return torch.randint(0, 20, (n, 6)), torch.randint(0, 20, (n,))
    return torch.randn(n, model[0].in_features), torch.randint(0, model[-1].out_features, (n,))


def train(
    model: nn.Module,
    tracker,
    steps: int = 21,
    lr: float = 0.05,
    start: int = 0,
    seed: int = 0,
    opt=None,
):
    """A plain loop with the tracker attached, as a chapter writes it; batches depend on (seed,
    step) only."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(start, steps):
        torch.manual_seed(seed + step)
        x, y = batch_for(model)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.step(step, model, loss=loss.item())
    return opt
