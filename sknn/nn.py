"""Pure torch building blocks and losses: no scikit-learn in here.

Modules trained by the engine take ``forward(x, generator=None, sample_weight=None)``: the
generator feeds their training-time randomness (dropout, augmentation), the sample weights
their batch statistics.

Parameters are created empty (``torch.empty``): nothing here draws from torch's global random
number generator. The estimators initialise weights from their own ``random_state``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def sigmoid_(x):
    """The logistic function in place, ``1 / (1 + exp(-x))``. torch's own kernel computes the
    last elements of a tensor by other code than the rest, which differs in the last bit for a
    few percent of float32 values: a value's bits would depend on its place in the tensor (a
    member of a stack would not get its own fit's, nor a row its prediction in another batch)."""
    return x.neg_().exp_().add_(1).reciprocal_()


_INPLACE_ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": sigmoid_,
    "tanh": torch.tanh_,
    "relu": lambda x: x.clamp_min_(0),
}

# Gradient through the activation, from the gradient ``d`` w.r.t. its output ``h`` and ``h``,
# in place in ``d`` (a product's output, owned by the backpropagation).
_ACTIVATION_GRADS = {
    "identity": lambda d, h: d,
    "logistic": lambda d, h: d.mul_(h * (1 - h)),
    "tanh": lambda d, h: d.mul_(1 - h * h),
    "relu": lambda d, h: torch.ops.aten.threshold_backward.grad_input(d, h, 0, grad_input=d),
}


def _find_onednn_linear():
    """torch's oneDNN linear kernel, ``x @ w.T + b`` with an optional fused ReLU, where this
    torch build has it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        a = torch.ones(2, 3)
        if not torch.backends.mkldnn.is_available() or not torch.equal(
                op(a, a, None, "none", [], ""), a @ a.t()):
            return None
    except (AttributeError, RuntimeError):
        return None
    return op


def cpu_info(field):
    """The value of ``field`` in /proc/cpuinfo ('vendor_id', 'model name', ...), or '' where
    unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor():
    """The CPU's vendor string ('GenuineIntel', 'AuthenticAMD', ...), or '' where unknown."""
    return cpu_info("vendor_id")


def linear_route(capability=None, vendor=None):
    """How float32 products of the MLP layers run on this CPU: 'onednn' (torch's oneDNN linear)
    or 'blas' (torch.addmm / mm, MKL in torch's builds). A fixed function of the machine, so that
    the same random_state gives the same model on it, measured on the MLP benchmark's layers
    (bench_mlp.py; ms per epoch, oneDNN vs BLAS route): AMD EPYC with AVX-512, where MKL keeps to
    AVX2 on AMD, oneDNN about 1.5x faster; AMD EPYC with AVX2 only, BLAS faster (171 vs 122 us
    for one 200x100 @ 100x256 product); Intel Xeon with AVX-512, BLAS faster (97 vs 69 ms per
    epoch; 106 vs 79 with AVX2 emulated)."""
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    vendor = cpu_vendor() if vendor is None else vendor
    return "onednn" if vendor == "AuthenticAMD" and capability.startswith("AVX512") else "blas"


_ONEDNN_LINEAR = _find_onednn_linear() if linear_route() == "onednn" else None


def product(a, b, bias=None, relu=False, out=None, b_t=None):
    """``a @ b (+ bias)``, then ReLU if asked: by oneDNN for float32 CPU tensors large enough
    to gain from it (it takes ``b`` transposed: ``b_t`` when given, else ``b.t()``), else by
    torch.addmm / mm, into ``out`` when given (a :class:`Workspace`'s tensor: only on the BLAS
    route, see :meth:`Workspace.buffers`)."""
    if (out is None and _ONEDNN_LINEAR is not None and a.dtype == torch.float32
            and a.device.type == "cpu" and min(b.shape) >= 32):
        return _ONEDNN_LINEAR(a, b.t() if b_t is None else b_t, bias, "relu" if relu else "none",
                              [], "")
    out = torch.mm(a, b, out=out) if bias is None else torch.addmm(bias, a, b, out=out)
    return out.clamp_min_(0) if relu else out


def batch_norm(x, bn, training, sample_weight=None):
    """Apply batch-norm layer ``bn`` to ``x`` of shape (N, C) or (N, C, H, W).

    In training, with ``sample_weight``, the batch statistics are weighted over samples: a
    sample of weight 2 counts as two copies of it, one of weight 0 not at all, so that weighting
    and repeating samples train the same model (for the running variance, a batch weighing less
    than two samples counts as two). A batch holding a single value per channel
    has no statistics: it is normalised with the running ones.
    """
    if not training or x.numel() == x.shape[1]:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                            bn.eps)
    if sample_weight is None:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True,
                            bn.momentum, bn.eps)
    dims = (0, *range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    w = sample_weight.view((-1,) + (1,) * (x.ndim - 1))
    total = sample_weight.sum() * (x[0, 0].numel())
    mean = (x * w).sum(dims) / total
    centered = x - mean.view(per_channel)
    var = (centered.square() * w).sum(dims) / total
    with torch.no_grad():
        bn.running_mean.lerp_(mean, bn.momentum)
        # Bessel's correction, counting weights as repetitions; a batch weighing less than two
        # samples is corrected as two samples would be.
        bessel = total / torch.maximum(total - 1, total / 2).clamp_min(1e-12)
        bn.running_var.lerp_(var * bessel, bn.momentum)
        bn.num_batches_tracked += 1
    scale = torch.rsqrt(var + bn.eps) * bn.weight
    return centered * scale.view(per_channel) + bn.bias.view(per_channel)


def dropout(x, p, generator):
    """Inverted dropout drawing its mask from ``generator`` (never from the global RNG)."""
    if generator is None:
        raise ValueError("dropout in training mode needs a torch.Generator")
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


def after_dense(module, x, norms, i, generator, sample_weight):
    """What follows hidden dense layer ``i`` of ``module``: batch norm ``norms[i]`` (when there
    are norms), the module's activation, then its dropout in training."""
    if norms:
        x = batch_norm(x, norms[i], module.training, sample_weight)
    x = ACTIVATIONS[module.activation](x)
    if module.dropout and module.training:
        x = dropout(x, module.dropout, generator)
    return x


class MLP(nn.Module):
    """Fully connected network: ``(linear -> [batch norm] -> activation -> [dropout]) * k -> linear``.

    ``weights[i]`` has shape ``(fan_in, fan_out)``, the layout of scikit-learn's ``coefs_``.
    ``forward`` returns the raw output of the last layer (logits / linear predictor); the output
    activation belongs to the loss.
    """

    def __init__(self, layer_units, activation="relu", dropout=0.0, batch_norm=False,
                 dtype=torch.float32, device="cpu"):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        pairs = list(zip(layer_units[:-1], layer_units[1:]))
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(i, o, **kw)) for i, o in pairs])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(o, **kw)) for _, o in pairs])
        self.norms = nn.ModuleList(
            [nn.BatchNorm1d(o, **kw) for o in layer_units[1:-1]] if batch_norm else []
        )
        self.activation = activation
        self.dropout = float(dropout)

    def features(self, x, generator=None, sample_weight=None):
        """Activations of the last hidden layer (``x`` itself when there is none)."""
        for i in range(len(self.weights) - 1):
            x = torch.addmm(self.biases[i], x, self.weights[i])
            x = after_dense(self, x, self.norms, i, generator, sample_weight)
        return x

    def forward(self, x, generator=None, sample_weight=None):
        return torch.addmm(self.biases[-1], self.features(x, generator, sample_weight),
                           self.weights[-1])

    @property
    def supports_backprop(self):
        return not self.norms and not self.dropout

    @torch.no_grad()
    def backprop(self, x, y, w, loss, scale, decay, workspace=None):
        """Loss and gradients by hand-written backpropagation, as scikit-learn computes them:
        one pass with no autograd graph, for a network without batch norm or dropout.

        Returns ``scale * loss(x, y, w)`` and the gradients of
        ``scale * loss + decay / 2 * sum(||W||^2)`` in the order of ``self.parameters()``.
        With a :class:`Workspace`, the products write into its tensors instead of new ones, and
        the gradients returned are its own: valid until the next call with it.
        """
        # Read the ParameterLists directly: indexing them goes through Module.__getattr__.
        weights, biases = self.weights._parameters.values(), self.biases._parameters.values()
        weights, biases = list(weights), list(biases)
        relu = self.activation == "relu"
        act = _INPLACE_ACTIVATIONS[self.activation]
        ws = None if workspace is None else workspace.buffers(weights, biases, x)
        if ws is None:
            ws = _Buffers([W.shape for W in weights])  # no tensors: every product makes its own
        outputs = [x]
        for i, (W, b) in enumerate(zip(weights[:-1], biases[:-1])):
            h = product(outputs[-1], W, b, relu=relu, out=ws.h[i])
            outputs.append(h if relu else act(h))
        # The output layer runs in (samples, outputs) layout, as the hidden ones: over whole
        # epochs of bench_mlp.py it was 3-4% faster than the output-major layout z.T = W.T @ h.T
        # with AVX-512 and with AVX2 kernels (benchmarks/bench_routes.py), though that layout
        # wins on its own with the operands in the cache.
        h = outputs[-1]
        value, delta = loss.value_and_delta(torch.addmm(biases[-1], h, weights[-1],
                                                        out=ws.h[-1]), y, w)
        delta.mul_(scale)
        n = len(weights)
        # The activations transposed: the workspace's own views where they are its tensors
        outputs_t = [x.t()] + [t if h is buf else h.t()
                               for h, buf, t in zip(outputs[1:], ws.h, ws.h_t)]
        grad_w, grad_b = [None] * n, [None] * n
        grad_w[-1] = torch.mm(outputs_t[-1], delta, out=ws.gw[-1])
        grad_b[-1] = torch.sum(delta, 0, out=ws.gb[-1])
        if n > 1:
            delta = product(delta, weights[-1].t(), out=ws.d[-1], b_t=weights[-1])
        for i in range(n - 2, -1, -1):
            delta = _ACTIVATION_GRADS[self.activation](delta, outputs[i + 1])
            grad_w[i] = product(outputs_t[i], delta, out=ws.gw[i])
            grad_b[i] = torch.sum(delta, 0, out=ws.gb[i])
            if i:
                delta = product(delta, weights[i].t(), out=ws.d[i], b_t=weights[i])
        if decay:
            torch._foreach_add_(grad_w, weights, alpha=decay)
        return value * scale, grad_w + grad_b


class _Buffers:
    """What :meth:`MLP.backprop` (or :meth:`StackedMLP.backprop`) writes for one shape of batch
    ``x``, (rows, features) or a stack's (members, rows, features), through layers of
    ``shapes`` (fan_in, fan_out): each layer's activations ``h`` (and their transposed views
    ``h_t``), the deltas ``d`` sent back through it (none through the first), the gradients
    ``gw`` and ``gb``, and the output layer's weight gradient transposed ``gw_t``. Without
    ``x``: no tensors (every ``out`` is None, a new tensor), for a backprop without a
    workspace."""

    def __init__(self, shapes, x=None):
        if x is None:
            self.h = self.h_t = self.d = self.gw = self.gb = [None] * len(shapes)
            self.gw_t = None
            return
        rows, members, kw = x.shape[:-1], x.shape[:-2], dict(dtype=x.dtype, device=x.device)
        self.h = [torch.empty(*rows, fo, **kw) for _, fo in shapes]
        self.h_t = [h.transpose(-1, -2) for h in self.h]
        self.d = [None] + [torch.empty(*rows, fi, **kw) for fi, _ in shapes[1:]]
        self.gw = [torch.empty(*members, fi, fo, **kw) for fi, fo in shapes]
        self.gb = [torch.empty(*members, fo, **kw) for _, fo in shapes]
        self.gw_t = torch.empty(*members, shapes[-1][1], shapes[-1][0], **kw)


class Workspace:
    """Tensors that :meth:`MLP.backprop` writes its products into, kept for one fit (one set
    per batch size: the last batch of an epoch may be shorter), instead of new tensors for every
    minibatch. The same operations on the same operands: results are bit-identical. Measured
    on bench_mlp.py's fits, interleaved rounds: 5-7% less time per epoch with AVX-512 and with
    AVX2 kernels while the machine was quiet, from 4% less to 2% more in a noisier phase. Not
    used by oneDNN's route, whose product has no ``out``."""

    def __init__(self):
        self._sets = {}

    def buffers(self, weights, biases, x):
        if _ONEDNN_LINEAR is not None and x.dtype == torch.float32 and x.device.type == "cpu":
            return None
        key = (x.shape[0], x.dtype, x.device)
        found = self._sets.get(key)
        if found is None:
            found = self._sets[key] = _Buffers([tuple(W.shape) for W in weights], x)
        return found


def reset_parameters(module, generator):
    """PyTorch's default initialisation (Kaiming-uniform weights, uniform biases) for every
    convolution and linear layer, drawn from ``generator``; normalisation layers reset."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def random_shift(x, max_shift, generator):
    """Shift each image by its own random whole number of pixels in [-max_shift, max_shift]
    along each axis, filling with zeros: one gather for the whole batch."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, n, 1, 1), generator=generator,
                           device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - shifts[0]
    cols = torch.arange(w, device=x.device).view(1, 1, w) - shifts[1]
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w)
    out = x.reshape(n, x.shape[1], h * w).gather(2, flat.expand(-1, x.shape[1], -1))
    return out.view_as(x) * inside


class ConvNet(nn.Module):
    """``[conv -> [batch norm] -> activation -> pool] * k -> flatten -> MLP head``.

    Convolutions keep the image size ("same" padding); each pooling halves both sides, but no
    side below 1 (a side of 1 is left as it is). A feature grid larger than ``max_grid`` per side
    is average-pooled down to it before the dense layers. Layers are created without
    initialisation: call :func:`reset_parameters` with a generator.
    """

    def __init__(self, image_shape, conv_layers=(32, 64), kernel_size=3, pooling="max",
                 hidden_layer_sizes=(128,), n_outputs=10, activation="relu", dropout=0.0,
                 batch_norm=True, augment_shift=0, augment_flip=False, max_grid=7,
                 dtype=torch.float32,
                 device="cpu"):
        super().__init__()
        channels, h, w = image_shape
        with torch.device("meta"):
            blocks = []
            for c in conv_layers:
                blocks.append(nn.Conv2d(channels, c, kernel_size, padding="same"))
                if batch_norm:
                    blocks.append(nn.BatchNorm2d(c))
                blocks.append(_Activation(activation))
                if pooling is not None:
                    kernel = (min(2, h), min(2, w))
                    pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                    blocks.append(pool(kernel, ceil_mode=True))
                    h, w = -(-h // kernel[0]), -(-w // kernel[1])
                channels = c
            if h > max_grid or w > max_grid:
                blocks.append(nn.AdaptiveAvgPool2d((min(h, max_grid), min(w, max_grid))))
                h, w = min(h, max_grid), min(w, max_grid)
            self.blocks = nn.Sequential(*blocks)
            units = [channels * h * w, *hidden_layer_sizes]
            self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(units[:-1], units[1:]))
            self.dense_norms = nn.ModuleList(
                [nn.BatchNorm1d(b) for b in units[1:]] if batch_norm else [])
            self.out = nn.Linear(units[-1], n_outputs)
        self.to_empty(device=device).to(dtype)
        self.activation = activation
        self.dropout = float(dropout)
        self.augment_shift = int(augment_shift)
        self.augment_flip = bool(augment_flip)

    def features(self, x, generator=None, sample_weight=None):
        if self.training and self.augment_shift:
            x = random_shift(x, self.augment_shift, generator)
        if self.training and self.augment_flip:
            flip = torch.rand(x.shape[0], 1, 1, 1, generator=generator,
                              device=generator.device).to(x.device) < 0.5
            x = torch.where(flip, x.flip(-1), x)
        for block in self.blocks:
            if isinstance(block, nn.BatchNorm2d):
                x = batch_norm(x, block, self.training, sample_weight)
            else:
                x = block(x)
        x = x.flatten(1)
        for i, layer in enumerate(self.dense):
            x = after_dense(self, layer(x), self.dense_norms, i, generator, sample_weight)
        return x

    def forward(self, x, generator=None, sample_weight=None):
        return self.out(self.features(x, generator, sample_weight))


class _Activation(nn.Module):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self, x):
        return ACTIVATIONS[self.name](x)


def set_activation(module, name):
    """Make ``module`` (an :class:`MLP` or :class:`ConvNet`) compute activation ``name``."""
    module.activation = name
    for block in module.modules():
        if isinstance(block, _Activation):
            block.name = name


# Losses on the network's raw output ``z``. ``__call__`` returns the sum over samples of the
# per-sample loss (weighted by ``w`` when given), for autograd. Each pairs its output activation
# (``link``) with its canonical loss, so the gradient with respect to ``z`` is simply
# ``w * (link(z) - y)``: ``value_and_delta`` returns that gradient with the loss, without
# autograd, for ``MLP.backprop``. ``report_scale`` converts the objective into the value
# scikit-learn reports as ``loss_``.


def _total(values, w):
    """The sum of elementwise loss ``values`` (samples, outputs) over outputs and samples,
    weighted per sample by ``w``: a scalar, or one total per member of a stack's (members,
    samples, outputs) values. The same reductions either way, so that a member of a stack gets
    the very bits its own fit gets; without weights, one reduction over both axes."""
    if w is None:
        return values.sum((-2, -1))
    return (values.sum(-1) * w).sum(-1)


def _weighted_delta(delta, w):
    return delta if w is None else delta.mul_(w.unsqueeze(-1))


# Every loss takes ``z`` and ``y`` laid out (samples, outputs), or (members, samples, outputs)
# for a stack.

# The fewest classes for which torch's CPU log-softmax runs along rows (the classes axis
# contiguous) rather than along columns, by CPU kind and dtype. Along rows, its kernel is slow
# for rows shorter than a vector register: with AVX-512, 28 vs 6 us for 200 rows of 10 float32
# classes (269 vs 33 for 2,000 rows); with AVX2 kernels, 4 vs 6 (32 vs 36). Measured with
# torch 2.14 on both kinds (AVX2 emulated) for 2 to 100 classes, 200 and 2,000 rows. A fixed
# function of the machine: the same random_state gives the same model on it.
_ROW_SOFTMAX_MIN_CLASSES = {("AVX512", torch.float32): 16, ("AVX512", torch.float64): 64,
                            ("AVX2", torch.float32): 8, ("AVX2", torch.float64): 32}
_CPU = torch.backends.cpu.get_cpu_capability()

# Whether a stack computes its output layer's weight gradient h.T @ delta as (delta.T @ h).T,
# batched: 1.5x as fast for a few outputs (20 members, 200 rows, 256 units, 10 outputs: 278 vs
# 423 us), and the same bits as the ordinary fit's mm(h.t(), delta) with MKL's AVX-512 kernels
# (168 shapes tried, dimensions 9 to 300, on 1 and 2 threads). With its AVX2 kernels (emulated)
# the two orientations differ in the last bits for most shapes (324 of 504, e.g. 32 units and
# 10 outputs, on one thread), so there the stack runs h.T @ delta itself, batched.
_OUTPUT_GRAD_TRANSPOSED = _CPU.startswith("AVX512") and linear_route() == "blas"


def log_softmax(z):
    """``torch.log_softmax`` over the last axis of ``z``, contiguous; run along columns on a CPU
    where :data:`_ROW_SOFTMAX_MIN_CLASSES` says that is faster for this many classes."""
    if z.device.type == "cpu" and z.shape[-1] < _ROW_SOFTMAX_MIN_CLASSES.get((_CPU, z.dtype), 0):
        return torch.log_softmax(z.transpose(-1, -2), -2).transpose(-1, -2).contiguous()
    return torch.log_softmax(z, -1)


class SoftmaxCrossEntropy:
    """Multiclass log-loss on logits; ``y`` is the one-hot class matrix."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        return -_total(log_softmax(z) * y, w)

    def value_and_delta(self, z, y, w=None):
        logp = log_softmax(z)
        value = -_total(logp * y, w)
        return value, _weighted_delta(logp.exp_().sub_(y), w)

    @staticmethod
    def link(z, dim=-1):
        return torch.softmax(z, dim=dim)


class SigmoidCrossEntropy:
    """Binary / multilabel log-loss on logits, summed over outputs; ``y`` is a 0/1 matrix."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        # max(z, 0) - z y + log(1 + exp(-|z|)): torch's binary_cross_entropy_with_logits, from
        # operations whose bits do not depend on a value's place in the tensor (see sigmoid_)
        per = z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))
        return _total(per, w)

    def value_and_delta(self, z, y, w=None):
        return self(z, y, w), _weighted_delta(sigmoid_(z.clone()).sub_(y), w)

    @staticmethod
    def link(z, dim=-1):
        return torch.sigmoid(z)


class SquaredError:
    """Half squared error summed over outputs (the gradient scikit-learn's MLP follows);
    reported, as scikit-learn does, as a mean over outputs."""

    def __init__(self, n_outputs):
        self.report_scale = 1.0 / n_outputs

    def __call__(self, z, y, w=None):
        return 0.5 * _total((z - y).square(), w)

    def value_and_delta(self, z, y, w=None):
        delta = z - y
        value = 0.5 * _total(delta.square(), w)
        return value, _weighted_delta(delta, w)

    @staticmethod
    def link(z, dim=-1):
        return z


class PoissonDeviance:
    """Half Poisson deviance with a log link, summed over outputs."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        return _total(torch.xlogy(y, y) - y * z - y + torch.exp(z), w)

    def value_and_delta(self, z, y, w=None):
        return self(z, y, w), _weighted_delta(torch.exp(z).sub_(y), w)

    @staticmethod
    def link(z, dim=-1):
        return torch.exp(z)


# The smallest size of every dimension of a product for which ``torch.bmm`` gives each member
# the bits ``torch.mm`` gives it alone. Below it (a dimension of 1, where mm runs a
# matrix-vector product; a few rows, units or outputs) the two run other kernels. Measured over
# all products with dimensions from 1 to 200 (16 sizes each, four layouts): with AVX-512 kernels
# on 1 and 2 threads, and with AVX2 kernels (emulated) on 1, every product whose dimensions were
# all 9 or more was equal bit for bit. With AVX2 kernels on 2 threads, MKL shares a single
# product's work between the threads otherwise than a batch's, and 554 of those products
# differed in the last bits: there (see batched_is_exact) every product runs one per member.
BATCHED_MIN_SIZE = 9


def batched_is_exact():
    """Whether ``torch.bmm`` gives each member ``torch.mm``'s bits (for products whose
    dimensions are all BATCHED_MIN_SIZE or more) on this CPU, at the current thread count: with
    AVX-512 kernels always, with others on one thread only. Where it does not, a stack runs one
    product per member: on the benchmark's randomized search with AVX2 kernels (emulated) on two
    threads, a split's score differed by up to 0.042 with batched products, by 0 with one
    product per member, in 1.16x the time (benchmarks/bench_search.py)."""
    return _CPU.startswith("AVX512") or torch.get_num_threads() == 1


def member_products(a, b, bias=None, out=None):
    """Per member m, ``a[m] @ b[m]`` (``+ bias[m]``) with the bits of ``torch.mm`` /
    ``torch.addmm`` on member m alone: one batched product where that holds, else one product
    per member; into ``out`` when given."""
    if min(a.shape[1], a.shape[2], b.shape[2]) >= BATCHED_MIN_SIZE and batched_is_exact():
        return (torch.bmm(a, b, out=out) if bias is None
                else torch.baddbmm(bias.unsqueeze(1), a, b, out=out))
    if out is None:
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
    for m in range(a.shape[0]):
        if bias is None:
            torch.mm(a[m], b[m], out=out[m])
        else:
            torch.addmm(bias[m], a[m], b[m], out=out[m])
    return out


class StackedMLP:
    """M plain MLPs of one shape (no batch norm, no dropout), trained side by side: member m's
    weights and biases are row m of one ``(M, P)`` parameter tensor, so that each layer is one
    batched product (``baddbmm`` / ``bmm``) for all members; an optimizer updates each member
    through views of its row.

    ``weights[i]`` is a ``(M, fan_in, fan_out)`` view of the parameters, ``biases[i]`` a
    ``(M, fan_out)`` one. Not an ``nn.Module``: it is built from and written back to
    :class:`MLP` modules by the engine.
    """

    def __init__(self, modules):
        first = modules[0]
        self.activation = first.activation
        self.shapes = [tuple(w.shape) for w in first.weights]
        self.n_members = len(modules)
        # Parameter order: as MLP.parameters() (weights, then biases), so that a member's row
        # lines up with its module's flattened parameters.
        rows = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in modules]
        self.params = torch.stack(rows)
        self._views()

    def _views(self):
        self.weights, self.biases = self.layers(self.params)
        self.grads = torch.empty_like(self.params)
        self._buffers = {}

    def _workspace(self, x):
        """The tensors :meth:`backprop` writes its products into for batches shaped as ``x``
        (members, rows, features), kept while the stack keeps its members. New tensors of a
        stack's size in every step can cost the page faults of fresh memory (the allocator
        gives such tensors back to the system when they are freed): on a lone step of 20
        members of 64-256-10 on 200 rows, 2,370 faults and 4.8 ms with new tensors, 1 and 2.4 ms
        with these; in the benchmark's fused grid, 36,000-236,000 faults in all with new
        tensors, about 20,000 with these."""
        key = tuple(x.shape[:2])
        found = self._buffers.get(key)
        if found is None:
            found = self._buffers[key] = _Buffers(self.shapes, x)
        return found

    def layers(self, flat):
        """``(weights, biases)``: views of a ``(M, P)`` tensor laid out as the parameters."""
        M, off = flat.shape[0], 0
        weights, biases = [], []
        for fi, fo in self.shapes:
            weights.append(flat[:, off:off + fi * fo].view(M, fi, fo))
            off += fi * fo
        for _, fo in self.shapes:
            biases.append(flat[:, off:off + fo])
            off += fo
        return weights, biases

    def member_views(self, flat):
        """Per member, its weights then its biases, as views of a ``(M, P)`` tensor laid out as
        the parameters (for per-member optimizer kernels)."""
        weights, biases = self.layers(flat)
        return [[w[m] for w in weights] + [b[m] for b in biases] for m in range(flat.shape[0])]

    def take(self, rows):
        """Keep only the members at ``rows`` (an index tensor), in that order."""
        self.params = self.params.index_select(0, rows)
        self.n_members = self.params.shape[0]
        self._views()

    def write_to(self, module, row_params):
        """Copy one member's parameters (a row of ``params``) into its :class:`MLP`."""
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(row_params.clone(), list(module.parameters()))

    def norms(self):
        """Per member, the norm of each weight matrix, shape (M, layers): as an ordinary fit
        computes its own (``torch._foreach_norm``), bit for bit."""
        return torch.stack([torch.linalg.vector_norm(w, dim=(1, 2)) for w in self.weights], 1)

    @torch.no_grad()
    def backprop(self, x, y, w, loss, scale, rows=None):
        """Per member: ``scale * loss`` on its batch (shape (M,)), and the gradients of it as
        one ``(M, P)`` tensor laid out as ``params``. ``w`` (M, n) weighs each row (None: all
        weigh one); ``scale`` (M,) is each member's 1 / batch weight. With ``rows`` (a slice),
        only those members, whose batches ``x``, ``y``, ``w``, ``scale`` are: their gradients
        are written into those rows of the ``(M, P)`` gradients, which are returned.

        Each member's operations are those of :meth:`MLP.backprop` on its own batch, batched:
        the same products in the same layouts (``bmm`` runs each member's product as ``mm``
        runs it), the same elementwise operations and reductions, so that a member's loss and
        gradients are bit for bit those of its own fit.
        """
        weights, biases, out = self.weights, self.biases, self.grads
        if rows is not None:
            weights, biases = [W[rows] for W in weights], [b[rows] for b in biases]
            out = out[rows]
        relu = self.activation == "relu"
        act = _INPLACE_ACTIVATIONS[self.activation]
        ws = self._workspace(x)
        outputs = [x]
        n = len(weights)
        for W, b, buf in zip(weights[:-1], biases[:-1], ws.h):
            h = member_products(outputs[-1], W, b, out=buf)
            outputs.append(h.clamp_min_(0) if relu else act(h))
        h = outputs[-1]
        value, delta = loss.value_and_delta(
            member_products(h, weights[-1], biases[-1], out=ws.h[-1]), y, w)
        delta.mul_(scale.view(-1, 1, 1))
        # The activations transposed: the workspace's own views, as in MLP.backprop
        outputs_t = [x.transpose(1, 2)] + [t if h is buf else h.transpose(1, 2)
                                           for h, buf, t in zip(outputs[1:], ws.h, ws.h_t)]
        grad_w, grad_b = [None] * n, [None] * n
        # h.T @ delta, as (delta.T @ h).T where that is faster and exact (see its constant)
        if (_OUTPUT_GRAD_TRANSPOSED and min(delta.shape[1:]) >= BATCHED_MIN_SIZE
                and h.shape[2] >= BATCHED_MIN_SIZE):
            grad_w[-1] = torch.bmm(delta.transpose(1, 2), h, out=ws.gw_t).transpose(1, 2)
        else:
            grad_w[-1] = member_products(outputs_t[-1], delta, out=ws.gw[-1])
        grad_b[-1] = torch.sum(delta, 1, out=ws.gb[-1])
        if n > 1:
            delta = member_products(delta, weights[-1].transpose(1, 2), out=ws.d[-1])
        for i in range(n - 2, -1, -1):
            delta = _ACTIVATION_GRADS[self.activation](delta, outputs[i + 1])
            grad_w[i] = member_products(outputs_t[i], delta, out=ws.gw[i])
            grad_b[i] = torch.sum(delta, 1, out=ws.gb[i])
            if i:
                delta = member_products(delta, weights[i].transpose(1, 2), out=ws.d[i])
        torch.cat([g.reshape(out.shape[0], -1) for g in grad_w + grad_b], dim=1, out=out)
        return value * scale, out
