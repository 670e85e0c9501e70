"""Inference: the outputs of a fitted network for a data set, computed with the module's own
parameters in their own precision (nothing is copied or converted per call), block by block
into one preallocated output array (bounded memory, whatever the number of rows), and so that a
row's output does not depend on the batch it comes in, bit for bit.

**Batch invariance.** A matrix product's BLAS kernel, and with it the last bits of each result,
depends on the shape of the product (MKL computes a lone row, or the last rows of a batch, with
other kernels than the others) and on how the product is split over threads. So each dense
layer runs on fixed-size chunks of :data:`CHUNK_ROWS` rows (padded with zero rows): a block of
rows is viewed as ``(n_chunks, CHUNK_ROWS, d)`` and multiplied by the weights, expanded over the
chunks, in one batched product (``torch.bmm``), whose every product has the shape
``CHUNK_ROWS x d``; MKL's batched GEMM gives each thread whole products. A batched product of a
single chunk goes to the plain, threaded GEMM, with other kernels: every batched product has at
least :data:`MIN_CHUNKS` chunks, and a lone row costs the product of 32 rows.

What decided the chunk (MKL in torch 2.14 on a 2-core Intel Xeon, with its AVX-512 kernels and
with the AVX2 ones forced by ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2``; float32 and float64; 1 to 64 threads; layers 1 to 1000 wide in and
out; a row alone against the same row at every position of batches of 2 to 300 rows): chunks of
8 and 32 rows gave some positions of a chunk other last bits with the AVX2 kernels; 4, 6 and 12
did with the weights transposed (``nn.Linear``'s layout, the ConvNet's dense layers); 16 never
did. Transposed weights also needed a chunk per thread (with two chunks, 6 threads split a
product): :func:`dense_chunks` asks for ``max(MIN_CHUNKS, threads)`` there. 16 rows also start
every chunk on a 64-byte boundary, whatever the layer's width. Measured on MLPClassifier((256,
128)) with 100 features (one row in us, then us per row in bulk; AVX-512 / AVX2): chunks of 4:
31 and 0.55 / 31 and 0.74; 6: 35, 0.51 / 34, 0.67; 12: 43, 0.50 / 43, 0.66; 16: 47, 0.48 / 51,
0.69 -- a plain product of the whole block: 0.49 / 0.68.

Elementwise operations run vectorised code, except for the last elements of each thread's range,
computed one by one: ``torch.sigmoid``'s two codes differ in the last bit (for 4% of float32
values), so the logistic function is computed as ``1 / (1 + exp(-x))``, whose operations agree
in both codes (checked on 2,000,000 values, as are tanh, batch norm with running statistics, and
the softmax computed here, row by row). The convolutions (oneDNN) give an image the same result
in any batch of two images or more: a lone image is computed beside a zero image.

Nothing is stored on the estimator or the module, so that concurrent calls from several threads
are safe and predictions follow any change of the parameters.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .nn import (_INPLACE_ACTIVATIONS, MLP, ConvNet, SigmoidCrossEntropy, SoftmaxCrossEntropy,
                 _Activation, batch_norm, sigmoid_)

CHUNK_ROWS = 16
MIN_CHUNKS = 2
BLOCK_ROWS = 4096  # rows per block: what a call holds at once, besides its input and output
BLOCK_IMAGES = 1024  # at most; fewer where the feature maps of one image are large
BLOCK_BYTES = 2**25  # for the largest feature maps of a block of images


def activation_(name):
    """Activation ``name`` applied in place, batch-invariant (the training ones: see
    :func:`~sknn.nn.sigmoid_`)."""
    return _INPLACE_ACTIVATIONS[name]


def softmax_(z):
    """Softmax over each row in place: ``exp(z - max)`` over its sum. Five times faster than
    ``torch.softmax`` on ten classes (0.015 vs 0.08 us per row), and as batch-invariant."""
    z = z.sub_(z.amax(1, keepdim=True)).exp_()
    return z.div_(z.sum(1, keepdim=True))


def output_link(loss):
    """The output activation of ``loss`` (its ``link``), batch-invariant, computed in place
    where it is sigmoid or softmax; None for none."""
    if loss is None:
        return None
    if isinstance(loss, SigmoidCrossEntropy):
        return sigmoid_
    if isinstance(loss, SoftmaxCrossEntropy):
        return softmax_
    return loss.link


def _params(plist):
    # The ParameterList's own dict: indexing it goes through Module.__getattr__, a few us each.
    return list(plist._parameters.values())


def mlp_layers(module, features=False):
    """The dense layers of an :class:`~sknn.nn.MLP` as ``(weight (in, out), bias, norm,
    activation)``, read from the module now; the output layer left out for ``features``."""
    weights, biases = _params(module.weights), _params(module.biases)
    norms = list(module.norms)
    layers = []
    for i, (w, b) in enumerate(zip(weights, biases)):
        if i == len(weights) - 1:
            if not features:
                layers.append((w, b, None, None))
        else:
            layers.append((w, b, norms[i] if norms else None, module.activation))
    return layers


def convnet_head(module, features=False):
    """The dense layers of a :class:`~sknn.nn.ConvNet` after its convolutions, as
    :func:`mlp_layers` gives them (weights as transposed views of ``nn.Linear``'s)."""
    norms = list(module.dense_norms)
    layers = [(lin.weight.t(), lin.bias, norms[i] if norms else None, module.activation)
              for i, lin in enumerate(module.dense)]
    if not features:
        layers.append((module.out.weight.t(), module.out.bias, None, None))
    return layers


def dense_chunks(layers):
    """The fewest chunks a batched product of these layers may have (see the module's doc)."""
    if any(not w.is_contiguous() for w, _, _, _ in layers):
        return max(MIN_CHUNKS, torch.get_num_threads())  # transposed weights
    return MIN_CHUNKS


def run_dense(x, layers):
    """``layers`` on ``x``, a ``(n_chunks * CHUNK_ROWS, d)`` tensor, chunk by chunk."""
    if not layers:
        return x
    n_chunks = x.shape[0] // CHUNK_ROWS
    h = x.view(n_chunks, CHUNK_ROWS, x.shape[1])
    for w, b, norm, act in layers:
        h = torch.bmm(h, w.expand(n_chunks, -1, -1))
        if b is not None:
            h = h.add_(b)  # faster than baddbmm's copy of the bias into the output
        if norm is not None:
            h = batch_norm(h.view(-1, h.shape[2]), norm, False).view(h.shape)
        if act is not None:
            h = activation_(act)(h)
    return h.view(-1, h.shape[2])


def _padded(n_rows, min_chunks):
    return max(-(-n_rows // CHUNK_ROWS), min_chunks) * CHUNK_ROWS


def _block_rows(block_rows):
    return max(CHUNK_ROWS, block_rows // CHUNK_ROWS * CHUNK_ROWS)


def predict_dense(X, layers, n_out, dtype, device, *, link=None, out_dtype=None,
                  block_rows=None):
    """``link(layers(X))`` for a 2-D array, memmap or sparse matrix X, as a new ``(n, n_out)``
    array of ``out_dtype`` (default: X's), filled block by block. The layers run in ``dtype``
    on ``device``: X's blocks are converted to it (float64 input to a float32 model runs in
    float32)."""
    n, d = X.shape
    out = np.empty((n, n_out), dtype=out_dtype or X.dtype)
    if n == 0:
        return out
    min_chunks = dense_chunks(layers)
    block_rows = _block_rows(BLOCK_ROWS if block_rows is None else block_rows)
    if sp.issparse(X) and X.format != "csr":
        X = X.tocsr()  # for its row slices
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    buffer = None
    with torch.inference_mode():
        for start in range(0, n, block_rows):
            part = X[start:start + block_rows]
            if sp.issparse(part):
                part = part.toarray()
            m = part.shape[0]
            rows = _padded(m, min_chunks)
            if rows == m and part.dtype == np_dtype and part.flags.c_contiguous:
                # A whole block of whole chunks: X's own rows, not a copy (MKL's batched
                # products gave the same bits at every alignment of their operands).
                with warnings.catch_warnings():  # read-only input: never written to
                    warnings.filterwarnings("ignore", message=".*not writable.*",
                                            category=UserWarning)
                    x = torch.from_numpy(part)
            else:
                if buffer is None or buffer.shape[0] != rows:
                    buffer = torch.zeros((rows, d), dtype=dtype)  # zeros past the last row
                elif rows > m:
                    buffer[m:].zero_()
                buffer.numpy()[:m] = part
                x = buffer
            if device.type != "cpu":
                x = x.to(device)
            z = run_dense(x, layers)
            if link is not None:
                z = link(z)
            out[start:start + m] = z[:m].cpu().numpy()
    return out


def _convnet_blocks(module, x):
    """The convolution blocks of a ConvNet in inference, with batch-invariant activations."""
    for block in module.blocks:
        if isinstance(block, nn.BatchNorm2d):
            x = batch_norm(x, block, False)
        elif isinstance(block, _Activation):
            x = activation_(block.name)(x)
        else:
            x = block(x)
    return x.flatten(1)


def image_tensor(images, dtype, device):
    """A block of ``(n, C, H, W)`` images (uint8, scaled to [0, 1] in float32, or float) as a
    new tensor of ``dtype`` with the standard strides (a 1-channel array may come with other
    strides that still count as contiguous, and lead the convolutions to other kernels)."""
    if images.dtype == np.uint8:
        images = np.asarray(images, dtype=np.float32) / np.float32(255)
    elif any(s < 0 for s in images.strides):  # flipped views: torch takes positive strides
        images = images.copy()
    out = torch.empty(images.shape, dtype=dtype, device=device)
    with warnings.catch_warnings():  # read-only inputs (memmaps) are fine: we never write to them
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return out.copy_(torch.from_numpy(images))


def _block_images(module, images, itemsize):
    channels = [b.out_channels for b in module.blocks if isinstance(b, nn.Conv2d)]
    per_image = max(channels + [images.shape[1]]) * images.shape[2] * images.shape[3] * itemsize
    return int(min(BLOCK_IMAGES, max(2, BLOCK_BYTES // per_image)))


def predict_convnet(images, module, n_out, *, features=False, link=None, out_dtype=None):
    """``link(module(images))`` (``module.features`` for ``features``) for ``(n, C, H, W)``
    images, block by block: the convolutions on each block (a lone image beside a zero image),
    the dense layers in chunks as :func:`predict_dense` runs them."""
    n = images.shape[0]
    out_dtype = out_dtype or (np.float32 if images.dtype == np.uint8 else images.dtype)
    out = np.empty((n, n_out), dtype=out_dtype)
    if n == 0:
        return out
    p = module.out.weight
    dtype, device = p.dtype, p.device
    layers = convnet_head(module, features)
    min_chunks = dense_chunks(layers)
    block_images = _block_images(module, images, p.element_size())
    with torch.inference_mode():
        for start in range(0, n, block_images):
            x = image_tensor(images[start:start + block_images], dtype, device)
            m = x.shape[0]
            if m == 1:
                x = torch.cat([x, torch.zeros_like(x)])
            h = _convnet_blocks(module, x)[:m]
            if layers:
                padded = torch.zeros((_padded(m, min_chunks), h.shape[1]), dtype=dtype,
                                     device=device)
                padded[:m] = h
                h = run_dense(padded, layers)[:m]
            if link is not None:
                h = link(h)
            out[start:start + m] = h.cpu().numpy()
    return out


def predict(module, X, n_out, *, features=False, loss=None, out_dtype=None):
    """Outputs of a fitted sknn module for X (2-D rows for an MLP, ``(n, C, H, W)`` images for
    a ConvNet): the last hidden layer's activations for ``features``, else the network's output
    through ``loss``'s output activation."""
    link = None if features else output_link(loss)
    if isinstance(module, MLP):
        w = _params(module.weights)[0]
        return predict_dense(X, mlp_layers(module, features), n_out, w.dtype, w.device,
                             link=link, out_dtype=out_dtype)
    if isinstance(module, ConvNet):
        return predict_convnet(X, module, n_out, features=features, link=link,
                               out_dtype=out_dtype)
    raise TypeError(f"No inference for modules of type {type(module).__name__}.")
