namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>Leading sub-block [0:s0, 0:s1, ...] (a view, not recorded).</summary>
    internal Tensor Slice0To(int[] sizes)
    {
        if (ShapeUtil.Equal(sizes, shape)) return this;
        return new Tensor(storage, (int[])sizes.Clone(), strides, offset);
    }

    /// <summary>Selects entries along <paramref name="dim"/> by a 1-D int64 index (duplicates allowed).</summary>
    public Tensor IndexSelect(int dim, Tensor index)
    {
        int d = NormalizeDim(dim, shape.Length, "index_select");
        if (index.Dim > 1) throw new ShapeMismatchException($"index_select: index must be 0-D or 1-D, got shape {ShapeUtil.Format(index.shape)}");
        var idx = index.Reshape(-1);
        var r = Cpu.IndexSelect(this, d, idx);
        var inShape = shape;
        return Record(r, "index_select", [this], g => [Zeros(inShape, g.DType).IndexAdd(d, idx, g)], idx);
    }

    /// <summary>Out-of-place index_add: adds slices of <paramref name="source"/> at the indexed positions along dim.</summary>
    public Tensor IndexAdd(int dim, Tensor index, Tensor source)
    {
        int d = NormalizeDim(dim, shape.Length, "index_add");
        var r = Cpu.IndexAdd(this, d, index, source);
        return Record(r, "index_add", [this, source], g => [g, source.requiresGrad ? g.IndexSelect(d, index) : null], index);
    }

    /// <summary>out[i][j][k] = x[i][index[i][j][k]][k] for dim = 1 (torch.gather).</summary>
    public Tensor Gather(int dim, Tensor index)
    {
        int d = NormalizeDim(dim, shape.Length, "gather");
        var r = Cpu.Gather(this, d, index);
        var inShape = shape;
        return Record(r, "gather", [this], g => [Zeros(inShape, g.DType).ScatterAdd(d, index, g)], index);
    }

    /// <summary>Out-of-place scatter_add: src values added at the index positions (duplicates accumulate).</summary>
    public Tensor ScatterAdd(int dim, Tensor index, Tensor src)
    {
        int d = NormalizeDim(dim, shape.Length, "scatter_add");
        var r = Cpu.Scatter(this, d, index, src, add: true);
        return Record(r, "scatter_add", [this, src], g => [g, src.requiresGrad ? GatherPadded(g, d, index, src.shape) : null], index);
    }

    /// <summary>Out-of-place scatter: src values written at the index positions.</summary>
    public Tensor Scatter(int dim, Tensor index, Tensor src)
    {
        int d = NormalizeDim(dim, shape.Length, "scatter");
        var r = Cpu.Scatter(this, d, index, src, add: false);
        return Record(r, "scatter", [this, src], g => [
            requiresGrad ? g.Scatter(d, index, ZerosLike(src)) : null,
            src.requiresGrad ? GatherPadded(g, d, index, src.shape) : null], index);
    }

    public Tensor Scatter(int dim, Tensor index, double value) => Scatter(dim, index, Full(index.shape, value, DType));

    // The gradient of src in scatter: gathered values where the index reaches, zero beyond the index's extent.
    static Tensor GatherPadded(Tensor g, int d, Tensor index, int[] srcShape)
    {
        var gathered = g.Gather(d, index);
        if (ShapeUtil.Equal(index.shape, srcShape)) return gathered;
        var pads = new int[srcShape.Length * 2];
        for (int k = 0; k < srcShape.Length; k++) pads[(srcShape.Length - 1 - k) * 2 + 1] = srcShape[k] - index.shape[k];
        return Functional.Pad(gathered, pads);
    }

    /// <summary>Coordinates of the nonzero elements, shape [n, rank], int64.</summary>
    public Tensor Nonzero()
    {
        var b = AsBool().ToArray<bool>();
        var list = new List<long>();
        var coord = new int[shape.Length];
        int count = 0;
        for (int p = 0; p < b.Length; p++)
        {
            if (b[p]) { foreach (var c in coord) list.Add(c); count++; }
            for (int k = shape.Length - 1; k >= 0; k--)
            {
                if (++coord[k] < shape[k]) break;
                coord[k] = 0;
            }
        }
        return FromArray(list.ToArray(), count, shape.Length);
    }

    /// <summary>The elements where <paramref name="mask"/> (broadcast) is true, as a 1-D tensor.</summary>
    public Tensor MaskedSelect(Tensor mask)
    {
        if (mask.DType != DType.Bool) throw new DTypeException($"masked_select: mask must be bool, got {mask.DType.TorchName()}");
        var s = ShapeUtil.Broadcast("masked_select", shape, mask.shape);
        var flatMask = mask.Expand(s).Reshape(-1);
        var positions = flatMask.Nonzero().Reshape(-1);
        return Expand(s).Reshape(-1).IndexSelect(0, positions);
    }

    /// <summary>
    /// Advanced indexing x[i0, i1, ...] with index tensors for the leading dimensions (null keeps a dimension whole).
    /// The indexed dimensions must be consecutive; their index tensors broadcast together, and the result has the
    /// broadcast index shape in their place. A bool tensor selects like <see cref="MaskedSelect"/> over its dims.
    /// </summary>
    public Tensor Index(params Tensor?[] indices)
    {
        var (first, count, flat, idxShape) = LinearIndex(indices, "index");
        if (count == 0) return this;
        var merged = MergeDims(first, count);
        var picked = merged.IndexSelect(first, flat);
        var outShape = new List<int>();
        for (int i = 0; i < first; i++) outShape.Add(shape[i]);
        outShape.AddRange(idxShape);
        for (int i = first + count; i < shape.Length; i++) outShape.Add(shape[i]);
        return picked.Reshape(outShape.ToArray());
    }

    /// <summary>In-place x[indices] = values (values broadcast to the indexed shape); later duplicates win.</summary>
    public Tensor IndexPut_(Tensor?[] indices, Tensor values)
    {
        CheckInPlace("index_put_");
        var (first, count, flat, idxShape) = LinearIndex(indices, "index_put_");
        var target = Contiguous();
        if (!ReferenceEquals(target, this))
            throw new NablaException("index_put_: the tensor must be contiguous");
        var merged = new Tensor(storage, MergedShape(first, count), ContiguousStrides(MergedShape(first, count)), offset);
        var outShape = new List<int>();
        for (int i = 0; i < first; i++) outShape.Add(shape[i]);
        outShape.AddRange(idxShape);
        for (int i = first + count; i < shape.Length; i++) outShape.Add(shape[i]);
        var v = values.Detach().To(DType).Expand(outShape.ToArray()).Reshape(MergedShapeWith(first, count, flat.NumElements));
        var written = Cpu.IndexCopy(merged, first, flat, v);
        merged.AssignFrom(written);
        BumpVersion();
        return this;
    }

    int[] MergedShape(int first, int count) => MergedShapeWith(first, count, Enumerable.Range(first, count).Aggregate(1, (a, i) => a * shape[i]));

    int[] MergedShapeWith(int first, int count, int mid)
    {
        var s = new List<int>();
        for (int i = 0; i < first; i++) s.Add(shape[i]);
        s.Add(mid);
        for (int i = first + count; i < shape.Length; i++) s.Add(shape[i]);
        return s.ToArray();
    }

    Tensor MergeDims(int first, int count) => Reshape(MergedShape(first, count));

    (int first, int count, Tensor flat, int[] idxShape) LinearIndex(Tensor?[] indices, string op)
    {
        if (indices.Length > shape.Length)
            throw new IndexOutOfBoundsException($"{op}: too many indices ({indices.Length}) for a tensor of rank {shape.Length} (shape {ShapeUtil.Format(shape)})");
        // Expand bool masks into one int64 index per dimension they cover.
        var expanded = new List<Tensor?>();
        foreach (var ix in indices)
        {
            if (ix is not null && ix.DType == DType.Bool)
            {
                int at = expanded.Count;
                for (int k = 0; k < ix.Dim; k++)
                    if (at + k >= shape.Length || ix.shape[k] != shape[at + k])
                        throw new ShapeMismatchException($"{op}: the mask of shape {ShapeUtil.Format(ix.shape)} does not match the indexed tensor's shape {ShapeUtil.Format(shape)} at dimension {at + k}");
                var nz = ix.Nonzero();
                for (int k = 0; k < ix.Dim; k++) expanded.Add(nz.Select(1, k));
            }
            else expanded.Add(ix);
        }
        int first = -1, last = -1;
        for (int i = 0; i < expanded.Count; i++)
            if (expanded[i] is not null) { if (first < 0) first = i; last = i; }
        if (first < 0) return (0, 0, Arange(0), []);
        for (int i = first; i <= last; i++)
            if (expanded[i] is null) throw new NablaException($"{op}: index tensors must be on consecutive dimensions (dimension {i} has none)");
        int count = last - first + 1;
        int[] bshape = expanded[first]!.shape;
        for (int i = first + 1; i <= last; i++) bshape = ShapeUtil.Broadcast(op, bshape, expanded[i]!.shape);
        Tensor? flat = null;
        for (int i = first; i <= last; i++)
        {
            var ix = expanded[i]!;
            if (ix.DType is not (DType.Int64 or DType.Int32)) throw new DTypeException($"{op}: indices must be int64, int32 or bool, got {ix.DType.TorchName()}");
            int n = shape[i];
            var v = ix.Detach().To(DType.Int64);
            var vals = v.ToArray<long>();
            foreach (var x in vals)
                if (x < -n || x >= n) throw new IndexOutOfBoundsException($"{op}: index {x} is out of bounds for dimension {i} with size {n}");
            v = Where(v.Lt(0.0), v.Add(n), v).Expand(bshape);
            flat = flat is null ? v : flat.Mul(n).Add(v);
        }
        return (first, count, flat!.Reshape(-1).ContiguousCopyRaw(), bshape);
    }
}

internal static partial class Cpu
{
    /// <summary>Copy of x with slices of v written at idx along d; later duplicates win.</summary>
    public static Tensor IndexCopy(Tensor x, int d, Tensor index, Tensor v)
    {
        var idx = index.ToArray<long>();
        var r = x.ContiguousCopyRaw();
        var (outer, n, inner) = Around(x.shape, d);
        var vc = CastIfNeeded(v, x.DType).ContiguousCopyRaw();
        int m = idx.Length;
        for (int o = 0; o < outer; o++)
        for (int j = 0; j < m; j++)
            Array.Copy(vc.storage.Data, (o * m + j) * inner, r.storage.Data, (o * n + (int)idx[j]) * inner, inner);
        return r;
    }
}
