"""Helpers for tests that compare against torch / torchvision / pytorch-grad-cam on identical weights."""
import numpy as np
import torch


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (eval mode).

    Freshly initialized BatchNorm is the identity in eval mode, which would hide conversion bugs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def nhwc_to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def layer_output(model: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Output of `module` during model(x), as NHWC numpy."""
    store = {}

    def hook(module, inputs, output):  # returns None: a returned value would replace the output
        store.setdefault("out", output.detach().clone())

    handle = module.register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    handle.remove()
    return store["out"].numpy().transpose(0, 2, 3, 1)
