import mlflow
import torch
import wandb
from torch import nn
from torch.nn.utils import prune

from expander_sweeps import log_expansion  # line 1 of 2


class Net(nn.Module):  # your model
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(28, 64, num_layers=2, batch_first=True), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


torch.manual_seed(0)
x, y = torch.randn(512, 28, 28), torch.randint(0, 10, (512,))  # your data
model = Net()
for name in ("weight_ih_l0", "weight_hh_l0", "weight_hh_l1"):
    prune.l1_unstructured(model.rnn, name, amount=0.8)  # keep 20% of each matrix
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
wandb.init(project="my-project")
with mlflow.start_run():
    for epoch in range(3):  # your loop
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
        mlflow.log_metric("loss", loss.item(), step=epoch)
        wandb.log({"loss": loss.item()}, step=epoch)
        table = log_expansion(model, step=epoch)  # line 2 of 2
wandb.finish()
binary = table.query("weighting == 'binary'")
print(binary[["matrix", "edges", "lambda_1", "lambda_2", "delta_r", "delta_s", "status"]].to_string(index=False))
