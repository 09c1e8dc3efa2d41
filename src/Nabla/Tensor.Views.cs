namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>A view of the same storage with another layout, recorded so its gradient is reshaped back.</summary>
    Tensor ViewAs(int[] newShape, int[] newStrides, int newOffset, string op)
    {
        var r = new Tensor(storage, newShape, newStrides, newOffset);
        var inShape = shape;
        return Record(r, op, [this], g => [g.Reshape(inShape)]);
    }

    /// <summary>Resolves one -1 in a requested shape and checks the element count.</summary>
    int[] InferShape(int[] requested, string op)
    {
        var s = (int[])requested.Clone();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == -1)
            {
                if (infer >= 0) throw new ShapeMismatchException($"{op}: only one dimension can be inferred (-1) in {ShapeUtil.Format(requested)}");
                infer = i;
            }
            else if (s[i] < 0) throw new ShapeMismatchException($"{op}: invalid size {s[i]} at dimension {i} of {ShapeUtil.Format(requested)}");
            else known *= s[i];
        }
        int n = NumElements;
        if (infer >= 0)
        {
            if (known == 0 || n % known != 0)
                throw new ShapeMismatchException($"{op}: shape {ShapeUtil.Format(requested)} is invalid for input of shape {ShapeUtil.Format(shape)} ({n} elements)");
            s[infer] = (int)(n / known);
        }
        else if (known != n)
            throw new ShapeMismatchException($"{op}: shape {ShapeUtil.Format(requested)} is invalid for input of shape {ShapeUtil.Format(shape)} ({n} elements)");
        return s;
    }

    /// <summary>Reshape: a view when the layout allows (contiguous), otherwise a copy. One size may be -1.</summary>
    public Tensor Reshape(params int[] newShape)
    {
        var s = InferShape(newShape, "reshape");
        if (ShapeUtil.Equal(s, shape)) return this;
        if (IsContiguous) return ViewAs(s, ContiguousStrides(s), offset, "reshape");
        return Contiguous().Reshape(s);
    }

    /// <summary>View: like Reshape but never copies; throws when the layout is not contiguous.</summary>
    public Tensor View(params int[] newShape)
    {
        var s = InferShape(newShape, "view");
        if (!IsContiguous)
            throw new ShapeMismatchException($"view: size {ShapeUtil.Format(s)} is not compatible with the strides of input of shape {ShapeUtil.Format(shape)}, strides {ShapeUtil.Format(strides)}; use Reshape()");
        return ViewAs(s, ContiguousStrides(s), offset, "view");
    }

    public Tensor Contiguous()
    {
        if (IsContiguous) return this;
        var r = Empty((int[])shape.Clone(), DType);
        CopyInto(r);
        return Record(r, "contiguous", [this], g => [g]);
    }

    /// <summary>Copies this tensor's elements into a contiguous tensor of the same dtype and element count.</summary>
    void CopyInto(Tensor dst)
    {
        switch (DType)
        {
            case DType.Float32: Cpu.CopyStrided(storage.As<float>(), offset, shape, strides, dst.ContiguousSpan<float>()); break;
            case DType.Float64: Cpu.CopyStrided(storage.As<double>(), offset, shape, strides, dst.ContiguousSpan<double>()); break;
            case DType.Int64: Cpu.CopyStrided(storage.As<long>(), offset, shape, strides, dst.ContiguousSpan<long>()); break;
            case DType.Int32: Cpu.CopyStrided(storage.As<int>(), offset, shape, strides, dst.ContiguousSpan<int>()); break;
            case DType.Int8: Cpu.CopyStrided(storage.As<sbyte>(), offset, shape, strides, dst.ContiguousSpan<sbyte>()); break;
            case DType.UInt8: Cpu.CopyStrided(storage.As<byte>(), offset, shape, strides, dst.ContiguousSpan<byte>()); break;
            case DType.Bool: Cpu.CopyStrided(storage.As<bool>(), offset, shape, strides, dst.ContiguousSpan<bool>()); break;
            case DType.Float16: Cpu.CopyStrided(storage.As<Half>(), offset, shape, strides, dst.ContiguousSpan<Half>()); break;
            case DType.BFloat16: Cpu.CopyStrided(storage.As<BFloat16>(), offset, shape, strides, dst.ContiguousSpan<BFloat16>()); break;
            case DType.Int16: Cpu.CopyStrided(storage.As<short>(), offset, shape, strides, dst.ContiguousSpan<short>()); break;
            case DType.UInt16: Cpu.CopyStrided(storage.As<ushort>(), offset, shape, strides, dst.ContiguousSpan<ushort>()); break;
            case DType.UInt32: Cpu.CopyStrided(storage.As<uint>(), offset, shape, strides, dst.ContiguousSpan<uint>()); break;
            case DType.UInt64: Cpu.CopyStrided(storage.As<ulong>(), offset, shape, strides, dst.ContiguousSpan<ulong>()); break;
            default: throw DTypes.Unknown(DType);
        }
    }

    /// <summary>A contiguous copy that shares nothing with this tensor (torch.clone).</summary>
    public Tensor Clone()
    {
        var r = Empty((int[])shape.Clone(), DType);
        CopyInto(r);
        return Record(r, "clone", [this], g => [g]);
    }

    public Tensor Permute(params int[] dims)
    {
        if (dims.Length != shape.Length)
            throw new ShapeMismatchException($"permute: number of dims {dims.Length} does not match the tensor's rank {shape.Length} (shape {ShapeUtil.Format(shape)})");
        var ns = new int[dims.Length];
        var nst = new int[dims.Length];
        var inv = new int[dims.Length];
        var seen = new bool[dims.Length];
        for (int i = 0; i < dims.Length; i++)
        {
            int d = NormalizeDim(dims[i], shape.Length, "permute");
            if (seen[d]) throw new ShapeMismatchException($"permute: dimension {d} repeats in ({string.Join(", ", dims)})");
            seen[d] = true;
            ns[i] = shape[d];
            nst[i] = strides[d];
            inv[d] = i;
        }
        var r = new Tensor(storage, ns, nst, offset);
        return Record(r, "permute", [this], g => [g.Permute(inv)]);
    }

    public Tensor Transpose(int dim0, int dim1)
    {
        if (shape.Length < 2 && dim0 is 0 or -1 && dim1 is 0 or -1) return this;
        int a = NormalizeDim(dim0, shape.Length, "transpose"), b = NormalizeDim(dim1, shape.Length, "transpose");
        var p = new int[shape.Length];
        for (int i = 0; i < p.Length; i++) p[i] = i;
        (p[a], p[b]) = (p[b], p[a]);
        return Permute(p);
    }

    /// <summary>Transpose of a matrix (rank ≤ 2), like <c>x.T</c>.</summary>
    public Tensor T
    {
        get
        {
            if (shape.Length > 2) throw new ShapeMismatchException($"T: expects a tensor of rank <= 2, got shape {ShapeUtil.Format(shape)}; use Transpose or Permute");
            return shape.Length < 2 ? this : Transpose(0, 1);
        }
    }

    /// <summary>Transpose of the last two dimensions (<c>x.mT</c>).</summary>
    public Tensor MT => Transpose(-2, -1);

    public Tensor Unsqueeze(int dim)
    {
        int d = NormalizeDim(dim, shape.Length + 1, "unsqueeze");
        var ns = new List<int>(shape);
        var nst = new List<int>(strides);
        ns.Insert(d, 1);
        nst.Insert(d, d < strides.Length ? strides[d] * shape[d] : 1);
        return ViewAs(ns.ToArray(), nst.ToArray(), offset, "unsqueeze");
    }

    /// <summary>Removes size-1 dimensions: all of them, or only <paramref name="dim"/> if it has size 1.</summary>
    public Tensor Squeeze(int? dim = null)
    {
        var ns = new List<int>();
        var nst = new List<int>();
        int only = dim is null ? -1 : NormalizeDim(dim.Value, shape.Length, "squeeze");
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 1 && (only < 0 || only == i)) continue;
            ns.Add(shape[i]);
            nst.Add(strides[i]);
        }
        if (ns.Count == shape.Length) return this;
        return ViewAs(ns.ToArray(), nst.ToArray(), offset, "squeeze");
    }

    /// <summary>Broadcasts size-1 dimensions to larger sizes without copying (stride 0). -1 keeps a size.</summary>
    public Tensor Expand(params int[] sizes)
    {
        if (sizes.Length < shape.Length)
            throw new ShapeMismatchException($"expand: the number of sizes ({sizes.Length}) must be at least the tensor's rank; shape {ShapeUtil.Format(shape)}, sizes {ShapeUtil.Format(sizes)}");
        int lead = sizes.Length - shape.Length;
        var ns = new int[sizes.Length];
        var nst = new int[sizes.Length];
        for (int i = 0; i < sizes.Length; i++)
        {
            int src = i - lead;
            int cur = src >= 0 ? shape[src] : 1;
            int want = sizes[i] == -1 ? cur : sizes[i];
            if (src < 0 && sizes[i] == -1)
                throw new ShapeMismatchException($"expand: -1 is not allowed in a new leading dimension ({i}); shape {ShapeUtil.Format(shape)}, sizes {ShapeUtil.Format(sizes)}");
            if (cur != want && cur != 1)
                throw new ShapeMismatchException($"expand: the expanded size {want} must match the existing size {cur} at non-singleton dimension {i}; shape {ShapeUtil.Format(shape)}, sizes {ShapeUtil.Format(sizes)}");
            ns[i] = want;
            nst[i] = src >= 0 && cur == want ? strides[src] : 0;
        }
        if (ShapeUtil.Equal(ns, shape)) return this;
        var r = new Tensor(storage, ns, nst, offset);
        var inShape = shape;
        return Record(r, "expand", [this], g => [g.SumTo(inShape)]);
    }

    public Tensor ExpandAs(Tensor other) => Expand(other.shape);

    /// <summary>The view x[..., start:end:step, ...] along <paramref name="dim"/>; indices clamp as in Python slicing.</summary>
    public Tensor Slice(int dim, int start, int end, int step = 1)
    {
        int d = NormalizeDim(dim, shape.Length, "slice");
        if (step <= 0) throw new NablaException($"slice: step must be positive, got {step}");
        int n = shape[d];
        if (start < 0) start += n;
        if (end < 0) end += n;
        start = Math.Clamp(start, 0, n);
        end = Math.Clamp(end, start, n);
        int len = (end - start + step - 1) / step;
        var ns = (int[])shape.Clone();
        var nst = (int[])strides.Clone();
        ns[d] = len;
        nst[d] = strides[d] * step;
        var r = new Tensor(storage, ns, nst, offset + start * strides[d]);
        var inShape = shape;
        return Record(r, "slice", [this], g => [g.SliceBackward(inShape, d, start, step)]);
    }

    /// <summary>Zeros of <paramref name="fullShape"/> with this tensor written into the slice (the gradient of Slice).</summary>
    internal Tensor SliceBackward(int[] fullShape, int dim, int start, int step)
    {
        var r = Zeros(fullShape, DType);
        var view = new Tensor(r.storage, (int[])shape.Clone(), SliceStrides(r, dim, step), start * r.strides[dim]);
        view.AssignFrom(this);
        var myShape = shape;
        return Record(r, "slice_backward", [this], g => [g.Slice(dim, start, start + (myShape[dim] - 1) * step + 1, step)]);
    }

    static int[] SliceStrides(Tensor t, int dim, int step)
    {
        var s = (int[])t.strides.Clone();
        s[dim] *= step;
        return s;
    }

    public Tensor Narrow(int dim, int start, int length)
    {
        int d = NormalizeDim(dim, shape.Length, "narrow");
        if (start < 0) start += shape[d];
        if (start < 0 || length < 0 || start + length > shape[d])
            throw new IndexOutOfBoundsException($"narrow: start {start} + length {length} exceeds dimension {d} of size {shape[d]} (shape {ShapeUtil.Format(shape)})");
        return Slice(d, start, start + length);
    }

    /// <summary>x[..., index, ...]: removes dimension <paramref name="dim"/>.</summary>
    public Tensor Select(int dim, int index)
    {
        int d = NormalizeDim(dim, shape.Length, "select");
        int n = shape[d];
        if (index < -n || index >= n)
            throw new IndexOutOfBoundsException($"select: index {index} is out of bounds for dimension {d} with size {n} (shape {ShapeUtil.Format(shape)})");
        if (index < 0) index += n;
        return Slice(d, index, index + 1).Squeeze(d);
    }

    public Tensor Flatten(int startDim = 0, int endDim = -1)
    {
        if (shape.Length == 0) return Reshape(1);
        int s = NormalizeDim(startDim, shape.Length, "flatten"), e = NormalizeDim(endDim, shape.Length, "flatten");
        if (s > e) throw new DimensionOutOfRangeException($"flatten: start_dim {s} comes after end_dim {e}");
        var ns = new List<int>();
        for (int i = 0; i < s; i++) ns.Add(shape[i]);
        int m = 1;
        for (int i = s; i <= e; i++) m *= shape[i];
        ns.Add(m);
        for (int i = e + 1; i < shape.Length; i++) ns.Add(shape[i]);
        return Reshape(ns.ToArray());
    }

    public Tensor Unflatten(int dim, params int[] sizes)
    {
        int d = NormalizeDim(dim, shape.Length, "unflatten");
        var ns = new List<int>();
        for (int i = 0; i < d; i++) ns.Add(shape[i]);
        var inner = new Tensor(storage, [shape[d]], [1], 0).InferShape(sizes, "unflatten");
        ns.AddRange(inner);
        for (int i = d + 1; i < shape.Length; i++) ns.Add(shape[i]);
        return Reshape(ns.ToArray());
    }

    /// <summary>Splits into pieces of <paramref name="splitSize"/> along <paramref name="dim"/> (the last may be smaller).</summary>
    public Tensor[] Split(int splitSize, int dim = 0)
    {
        int d = NormalizeDim(dim, shape.Length, "split");
        if (splitSize <= 0) throw new NablaException($"split: split_size must be positive, got {splitSize}");
        var parts = new List<Tensor>();
        for (int s = 0; s < shape[d]; s += splitSize) parts.Add(Slice(d, s, Math.Min(s + splitSize, shape[d])));
        if (parts.Count == 0) parts.Add(Slice(d, 0, 0));
        return parts.ToArray();
    }

    /// <summary>Splits into pieces of the given sizes, which must add up to the dimension's size.</summary>
    public Tensor[] Split(int[] sizes, int dim = 0)
    {
        int d = NormalizeDim(dim, shape.Length, "split");
        if (sizes.Sum() != shape[d])
            throw new ShapeMismatchException($"split: sizes [{string.Join(", ", sizes)}] add up to {sizes.Sum()}, but dimension {d} has size {shape[d]} (shape {ShapeUtil.Format(shape)})");
        var parts = new Tensor[sizes.Length];
        int s = 0;
        for (int i = 0; i < sizes.Length; i++) { parts[i] = Slice(d, s, s + sizes[i]); s += sizes[i]; }
        return parts;
    }

    public Tensor[] Chunk(int chunks, int dim = 0)
    {
        int d = NormalizeDim(dim, shape.Length, "chunk");
        if (chunks <= 0) throw new NablaException($"chunk: number of chunks must be positive, got {chunks}");
        int size = (shape[d] + chunks - 1) / chunks;
        return Split(Math.Max(size, 1), d);
    }

    public Tensor[] Unbind(int dim = 0)
    {
        int d = NormalizeDim(dim, shape.Length, "unbind");
        var r = new Tensor[shape[d]];
        for (int i = 0; i < r.Length; i++) r[i] = Select(d, i);
        return r;
    }

    /// <summary>Reverses the order of elements along the given dims (a copy, as in PyTorch).</summary>
    public Tensor Flip(params int[] dims)
    {
        var r = this;
        foreach (var dim in dims)
        {
            int d = NormalizeDim(dim, shape.Length, "flip");
            if (shape.Length == 0) return Clone();   // a 0-d tensor has nothing to reverse (dim 0 or -1 allowed, as in PyTorch)
            int n = shape[d];
            var idx = new long[n];
            for (int i = 0; i < n; i++) idx[i] = n - 1 - i;
            r = r.IndexSelect(d, FromArray(idx));
        }
        return r;
    }

    /// <summary>Concatenates tensors along an existing dimension.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, int dim = 0)
    {
        if (tensors.Count == 0) throw new NablaException("cat: expected a non-empty list of tensors");
        var first = tensors[0];
        int d = NormalizeDim(dim, first.shape.Length, "cat");
        var dt = first.DType;
        for (int i = 1; i < tensors.Count; i++) dt = DTypes.Promote(dt, tensors[i].DType);
        int total = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            if (t.shape.Length != first.shape.Length)
                throw new ShapeMismatchException($"cat: tensor 0 has rank {first.shape.Length} ({ShapeUtil.Format(first.shape)}) but tensor {i} has rank {t.shape.Length} ({ShapeUtil.Format(t.shape)})");
            for (int k = 0; k < t.shape.Length; k++)
                if (k != d && t.shape[k] != first.shape[k])
                    throw new ShapeMismatchException($"cat: sizes of tensors must match except in dimension {d}; tensor 0 has shape {ShapeUtil.Format(first.shape)}, tensor {i} has shape {ShapeUtil.Format(t.shape)} (dimension {k})");
            total += t.shape[d];
        }
        var outShape = (int[])first.shape.Clone();
        outShape[d] = total;
        var r = Empty(outShape, dt);
        int start = 0;
        var starts = new int[tensors.Count];
        var inputs = new Tensor[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i].To(dt);
            inputs[i] = t;
            starts[i] = start;
            var view = new Tensor(r.storage, (int[])t.shape.Clone(), (int[])r.strides.Clone(), start * r.strides[d]);
            view.AssignFrom(t);
            start += t.shape[d];
        }
        return Record(r, "cat", inputs, g =>
        {
            var gs = new Tensor?[inputs.Length];
            for (int i = 0; i < inputs.Length; i++) gs[i] = g.Slice(d, starts[i], starts[i] + inputs[i].shape[d]);
            return gs;
        });
    }

    public static Tensor Stack(IReadOnlyList<Tensor> tensors, int dim = 0)
    {
        if (tensors.Count == 0) throw new NablaException("stack: expected a non-empty list of tensors");
        for (int i = 1; i < tensors.Count; i++)
            if (!ShapeUtil.Equal(tensors[i].shape, tensors[0].shape))
                throw new ShapeMismatchException($"stack: expects each tensor to be equal size, but got {ShapeUtil.Format(tensors[0].shape)} at entry 0 and {ShapeUtil.Format(tensors[i].shape)} at entry {i}");
        int d = NormalizeDim(dim, tensors[0].shape.Length + 1, "stack");
        var us = new Tensor[tensors.Count];
        for (int i = 0; i < us.Length; i++) us[i] = tensors[i].Unsqueeze(d);
        return Cat(us, d);
    }

    /// <summary>
    /// Writes <paramref name="src"/> (broadcast to this view's shape, cast to its dtype) into this view's elements.
    /// Not recorded by autograd; the caller handles versions.
    /// </summary>
    internal void AssignFrom(Tensor src)
    {
        var s = src.DType == DType ? src : Cpu.Cast(src, DType);
        if (!ShapeUtil.Equal(s.shape, shape)) s = s.Detach().Expand(shape);
        var tmp = s.IsContiguous && s.NumElements == NumElements ? s : s.Detach().ContiguousCopyRaw();
        switch (DType)
        {
            case DType.Float32: Cpu.ScatterStrided<float>(tmp.ContiguousSpan<float>(), storage.As<float>(), offset, shape, strides); break;
            case DType.Float64: Cpu.ScatterStrided<double>(tmp.ContiguousSpan<double>(), storage.As<double>(), offset, shape, strides); break;
            case DType.Int64: Cpu.ScatterStrided<long>(tmp.ContiguousSpan<long>(), storage.As<long>(), offset, shape, strides); break;
            case DType.Int32: Cpu.ScatterStrided<int>(tmp.ContiguousSpan<int>(), storage.As<int>(), offset, shape, strides); break;
            case DType.Int8: Cpu.ScatterStrided<sbyte>(tmp.ContiguousSpan<sbyte>(), storage.As<sbyte>(), offset, shape, strides); break;
            case DType.UInt8: Cpu.ScatterStrided<byte>(tmp.ContiguousSpan<byte>(), storage.As<byte>(), offset, shape, strides); break;
            case DType.Bool: Cpu.ScatterStrided<bool>(tmp.ContiguousSpan<bool>(), storage.As<bool>(), offset, shape, strides); break;
            case DType.Float16: Cpu.ScatterStrided<Half>(tmp.ContiguousSpan<Half>(), storage.As<Half>(), offset, shape, strides); break;
            case DType.BFloat16: Cpu.ScatterStrided<BFloat16>(tmp.ContiguousSpan<BFloat16>(), storage.As<BFloat16>(), offset, shape, strides); break;
            case DType.Int16: Cpu.ScatterStrided<short>(tmp.ContiguousSpan<short>(), storage.As<short>(), offset, shape, strides); break;
            case DType.UInt16: Cpu.ScatterStrided<ushort>(tmp.ContiguousSpan<ushort>(), storage.As<ushort>(), offset, shape, strides); break;
            case DType.UInt32: Cpu.ScatterStrided<uint>(tmp.ContiguousSpan<uint>(), storage.As<uint>(), offset, shape, strides); break;
            case DType.UInt64: Cpu.ScatterStrided<ulong>(tmp.ContiguousSpan<ulong>(), storage.As<ulong>(), offset, shape, strides); break;
            default: throw DTypes.Unknown(DType);
        }
    }

    /// <summary>A contiguous copy with no autograd record.</summary>
    internal Tensor ContiguousCopyRaw()
    {
        var r = Empty((int[])shape.Clone(), DType);
        CopyInto(r);
        return r;
    }
}
