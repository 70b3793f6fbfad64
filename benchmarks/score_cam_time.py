"""Wall time of Score-CAM (ResNet-18 layer4, 64 px, 1 image = 512 forwards): jaxcam vs pytorch-grad-cam."""
import time, numpy as np, jax, jax.numpy as jnp, torch, torchvision, jaxcam, pytorch_grad_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
torch.manual_seed(0)
tv = torchvision.models.resnet18(num_classes=10).eval()
m = jaxcam.models.resnet18(num_classes=10, weights=tv.state_dict())
x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
for bs in (64, 16):
    t = time.time(); jaxcam.score_cam(m, x, layer="layer4", targets=0, chunk_size=bs).block_until_ready(); t1 = time.time()
    jaxcam.score_cam(m, x, layer="layer4", targets=0, chunk_size=bs).block_until_ready(); t2 = time.time()
    print(f"jax bs={bs}: first {t1-t:.1f}s, second {t2-t1:.1f}s", flush=True)
t = time.time()
f = jax.jit(lambda m, x: m(x)); f(m, jnp.asarray(np.repeat(x, 64, 0))).block_until_ready(); t1=time.time()
for _ in range(8): f(m, jnp.asarray(np.repeat(x, 64, 0))).block_until_ready()
print(f"jax plain forward 8x64: {time.time()-t1:.1f}s", flush=True)
with pytorch_grad_cam.ScoreCAM(model=tv, target_layers=[tv.layer4[-1]]) as cam:
    cam.batch_size = 64
    t = time.time(); cam(input_tensor=torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), targets=[ClassifierOutputTarget(0)]); print(f"pgc: {time.time()-t:.1f}s")
