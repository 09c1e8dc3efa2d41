namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>
    /// torch.matmul: dot for 1-D·1-D, matrix product for 2-D, batched with broadcasting of the leading dims;
    /// a 1-D operand is treated as a row (left) or column (right) vector and that dim is removed after.
    /// </summary>
    public Tensor Matmul(Tensor other)
    {
        var a = this;
        var b = other;
        if (a.Dim == 0 || b.Dim == 0)
            throw new ShapeMismatchException($"matmul: both arguments need at least 1 dimension; left {ShapeUtil.Format(a.shape)}, right {ShapeUtil.Format(b.shape)}");
        bool squeezeLeft = a.Dim == 1, squeezeRight = b.Dim == 1;
        if (squeezeLeft) a = a.Unsqueeze(0);
        if (squeezeRight) b = b.Unsqueeze(-1);
        int k1 = a.shape[^1], k2 = b.shape[^2];
        if (k1 != k2)
            throw new ShapeMismatchException($"matmul: inner dimensions differ ({k1} vs {k2}); left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        try { ShapeUtil.Broadcast("matmul", a.shape[..^2], b.shape[..^2]); }
        catch (ShapeMismatchException e)
        {
            throw new ShapeMismatchException($"{e.Message.Replace("matmul: shapes", "matmul: batch dimensions")}; left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        }
        var dt = ResultType(a, b);
        if (!dt.IsFloatingPoint()) throw new DTypeException($"matmul: integer matrices are not supported (got {a.DType.TorchName()} and {b.DType.TorchName()})");
        a = a.To(dt);
        b = b.To(dt);
        var r = MatmulRecorded(a, b);
        if (squeezeLeft) r = r.Squeeze(-2);
        if (squeezeRight) r = r.Squeeze(-1);
        return r;
    }

    static Tensor MatmulRecorded(Tensor a, Tensor b)
    {
        var r = Cpu.Matmul(a, b);
        return Record(r, "matmul", [a, b], g =>
        {
            Tensor? ga = null, gb = null;
            if (a.requiresGrad) ga = g.Matmul(b.MT).SumTo(a.shape);
            if (b.requiresGrad)
            {
                if (b.Dim == 2 && b.strides[0] == 1 && b.strides[1] == b.shape[0] && b.shape[0] > 1 && b.shape[1] > 1)
                {
                    // b is the transpose of a contiguous matrix (a Linear layer's weight.T): compute gᵀ·a, contiguous in
                    // the weight's own layout, and return its transposed view, so the leaf gradient needs no strided copy.
                    var a2 = a.Dim > 2 ? a.Reshape(-1, a.shape[^1]) : a;
                    var g2 = g.Dim > 2 ? g.Reshape(-1, g.shape[^1]) : g;
                    gb = g2.MT.Matmul(a2).MT;
                }
                else if (b.Dim == 2 && a.Dim > 2)
                    gb = a.Reshape(-1, a.shape[^1]).T.Matmul(g.Reshape(-1, g.shape[^1]));
                else gb = a.MT.Matmul(g).SumTo(b.shape);
            }
            return [ga, gb];
        }, a, b);
    }

    /// <summary>Batched matrix product of two 3-D tensors with equal batch sizes (torch.bmm).</summary>
    public Tensor Bmm(Tensor other)
    {
        if (Dim != 3 || other.Dim != 3 || shape[0] != other.shape[0])
            throw new ShapeMismatchException($"bmm: expects two 3-D tensors with the same batch size; left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        return Matmul(other);
    }

    /// <summary>Matrix product of two 2-D tensors (torch.mm).</summary>
    public Tensor Mm(Tensor other)
    {
        if (Dim != 2 || other.Dim != 2)
            throw new ShapeMismatchException($"mm: expects two 2-D tensors; left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        return Matmul(other);
    }

    /// <summary>Outer product of two 1-D tensors.</summary>
    public Tensor Outer(Tensor other)
    {
        if (Dim != 1 || other.Dim != 1)
            throw new ShapeMismatchException($"outer: expects two 1-D tensors; left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        return Unsqueeze(1).Mul(other.Unsqueeze(0));
    }

    public Tensor Dot(Tensor other)
    {
        if (Dim != 1 || other.Dim != 1 || shape[0] != other.shape[0])
            throw new ShapeMismatchException($"dot: expects two 1-D tensors of equal length; left {ShapeUtil.Format(shape)}, right {ShapeUtil.Format(other.shape)}");
        return Mul(other).Sum();
    }

    /// <summary>
    /// Einstein summation for one or two operands, e.g. "ij,jk->ik", "bij,bjk->bik", "bhqd,bhkd->bhqk", "ij->ji", "ii->" is not supported
    /// (repeated letters within one operand). Without "->" the output is the letters seen once, sorted.
    /// </summary>
    public static Tensor Einsum(string equation, params Tensor[] operands)
    {
        var eq = equation.Replace(" ", "");
        string lhs, rhs;
        var parts = eq.Split("->");
        lhs = parts[0];
        var ins = lhs.Split(',');
        if (ins.Length != operands.Length)
            throw new NablaException($"einsum: equation '{equation}' names {ins.Length} operands but {operands.Length} were given");
        if (ins.Length is < 1 or > 2) throw new NablaException($"einsum: only one or two operands are supported, got {ins.Length}");
        for (int i = 0; i < ins.Length; i++)
        {
            if (ins[i].Length != operands[i].Dim)
                throw new ShapeMismatchException($"einsum: operand {i} has rank {operands[i].Dim} (shape {ShapeUtil.Format(operands[i].shape)}) but subscripts '{ins[i]}' name {ins[i].Length} dims");
            if (ins[i].Distinct().Count() != ins[i].Length)
                throw new NablaException($"einsum: repeated subscripts within one operand ('{ins[i]}') are not supported");
        }
        if (parts.Length > 1) rhs = parts[1];
        else
        {
            var all = string.Concat(ins);
            rhs = new string(all.Where(c => all.Count(x => x == c) == 1).OrderBy(c => c).ToArray());
        }
        if (ins.Length == 1)
        {
            var x = operands[0];
            var s = ins[0];
            var sumDims = Enumerable.Range(0, s.Length).Where(i => !rhs.Contains(s[i])).ToArray();
            if (sumDims.Length > 0) { x = x.Sum(sumDims); s = new string(s.Where(c => rhs.Contains(c)).ToArray()); }
            return x.Permute(rhs.Select(c => s.IndexOf(c)).ToArray());
        }
        var a = operands[0];
        var b = operands[1];
        string sa = ins[0], sb = ins[1];
        // Sum out letters that occur in one operand only and not in the output.
        var onlyA = Enumerable.Range(0, sa.Length).Where(i => !sb.Contains(sa[i]) && !rhs.Contains(sa[i])).ToArray();
        if (onlyA.Length > 0) { a = a.Sum(onlyA); sa = new string(sa.Where(c => sb.Contains(c) || rhs.Contains(c)).ToArray()); }
        var onlyB = Enumerable.Range(0, sb.Length).Where(i => !sa.Contains(sb[i]) && !rhs.Contains(sb[i])).ToArray();
        if (onlyB.Length > 0) { b = b.Sum(onlyB); sb = new string(sb.Where(c => sa.Contains(c) || rhs.Contains(c)).ToArray()); }
        var batch = sa.Where(c => sb.Contains(c) && rhs.Contains(c)).ToArray();
        var contract = sa.Where(c => sb.Contains(c) && !rhs.Contains(c)).ToArray();
        var freeA = sa.Where(c => !sb.Contains(c)).ToArray();
        var freeB = sb.Where(c => !sa.Contains(c)).ToArray();
        int Size(Tensor t, string s, char c) => t.shape[s.IndexOf(c)];
        foreach (var c in batch.Concat(contract))
            if (Size(a, sa, c) != Size(b, sb, c))
                throw new ShapeMismatchException($"einsum: subscript '{c}' has size {Size(a, sa, c)} in operand 0 ({ShapeUtil.Format(a.shape)}) and {Size(b, sb, c)} in operand 1 ({ShapeUtil.Format(b.shape)})");
        int Prod(Tensor t, string s, char[] cs) => cs.Aggregate(1, (acc, c) => acc * Size(t, s, c));
        var pa = a.Permute(batch.Concat(freeA).Concat(contract).Select(c => sa.IndexOf(c)).ToArray())
            .Reshape(Prod(a, sa, batch), Prod(a, sa, freeA), Prod(a, sa, contract));
        var pb = b.Permute(batch.Concat(contract).Concat(freeB).Select(c => sb.IndexOf(c)).ToArray())
            .Reshape(Prod(b, sb, batch), Prod(b, sb, contract), Prod(b, sb, freeB));
        var prod = pa.Matmul(pb);
        var order = batch.Concat(freeA).Concat(freeB).ToArray();
        var sizes = order.Select(c => sa.Contains(c) ? Size(a, sa, c) : Size(b, sb, c)).ToArray();
        var r = prod.Reshape(sizes);
        var outOrder = new string(order);
        foreach (var c in rhs)
            if (!outOrder.Contains(c)) throw new NablaException($"einsum: output subscript '{c}' does not appear in the inputs of '{equation}'");
        return r.Permute(rhs.Select(c => outOrder.IndexOf(c)).ToArray());
    }
}

internal static partial class Cpu
{
    /// <summary>a [..., M, K] · b [..., K, N] with broadcast batch dims, straight from the operands' strides.</summary>
    public static Tensor Matmul(Tensor a, Tensor b)
    {
        int m = a.shape[^2], k = a.shape[^1], n = b.shape[^1];
        var ba = a.shape[..^2];
        var bb = b.shape[..^2];
        var batchShape = ShapeUtil.Broadcast("matmul", ba, bb);
        var outShape = batchShape.Concat(new[] { m, n }).ToArray();
        var r = Tensor.Empty(outShape, a.DType);
        int batch = ShapeUtil.Numel(batchShape);
        if (r.NumElements == 0) return r;

        // Fold the batch of a into its rows when b is a plain matrix and a's rows are evenly spaced.
        if (bb.Length == 0 && ba.Length > 0 && a.strides[^2] * m == a.strides[^3] && IsUniformBatch(a))
        {
            Gemm2D(a, a.offset, a.strides[^2], a.strides[^1], b, b.offset, batch * m, n, k, r, 0);
            return r;
        }
        var aS = BatchStrides(a, batchShape);
        var bS = BatchStrides(b, batchShape);
        var offsA = BatchOffsets(batchShape, aS, a.offset);
        var offsB = BatchOffsets(batchShape, bS, b.offset);
        long work = (long)m * n * k;
        // Small matrices, or many mid-sized ones (attention scores: 12 × 128×64·64×128): one matrix per thread at a time,
        // one fork-join for the whole batch instead of one per matrix.
        if (batch > 1 && Gemm.Threads > 1 && (work < 1 << 20 || (batch >= 4 * Gemm.Threads && work < 1 << 22)))
        {
            WorkerPool.For(batch, Gemm.Threads, i =>
                Gemm2D(a, offsA[i], a.strides[^2], a.strides[^1], b, offsB[i], m, n, k, r, i * m * n, threads: false),
                large: batch * work >= Gemm.LargeBatchWork);
        }
        else
        {
            for (int i = 0; i < batch; i++)
                Gemm2D(a, offsA[i], a.strides[^2], a.strides[^1], b, offsB[i], m, n, k, r, i * m * n);
        }
        return r;
    }

    static bool IsUniformBatch(Tensor a)
    {
        // The leading dims (all but the last two) must themselves be contiguous over rows.
        int expected = a.strides[^3];
        for (int i = a.Dim - 3; i >= 0; i--)
        {
            if (a.shape[i] == 1) continue;
            if (a.strides[i] != expected) return false;
            expected *= a.shape[i];
        }
        return true;
    }

    static int[] BatchStrides(Tensor t, int[] batchShape)
    {
        var s = new int[batchShape.Length];
        int lead = batchShape.Length - (t.Dim - 2);
        for (int i = 0; i < t.Dim - 2; i++) s[lead + i] = t.shape[i] == 1 ? 0 : t.strides[i];
        return s;
    }

    static int[] BatchOffsets(int[] batchShape, int[] strides, int baseOffset)
    {
        int n = ShapeUtil.Numel(batchShape);
        var r = new int[n];
        var coord = new int[batchShape.Length];
        for (int i = 0; i < n; i++)
        {
            int o = baseOffset;
            for (int d = 0; d < coord.Length; d++) o += coord[d] * strides[d];
            r[i] = o;
            for (int d = coord.Length - 1; d >= 0; d--)
            {
                if (++coord[d] < batchShape[d]) break;
                coord[d] = 0;
            }
        }
        return r;
    }

    static void Gemm2D(Tensor a, int aOff, int rsA, int csA, Tensor b, int bOff, int m, int n, int k, Tensor c, int cOff, bool threads = true)
    {
        int rsB = b.strides[^2], csB = b.strides[^1];
        if (a.DType == DType.Float32)
        {
            if (threads) Gemm.Sgemm(m, n, k, a.storage.As<float>(), aOff, rsA, csA, b.storage.As<float>(), bOff, rsB, csB, c.storage.As<float>(), cOff, n, false);
            else Gemm.SgemmSerial(m, n, k, a.storage.As<float>(), aOff, rsA, csA, b.storage.As<float>(), bOff, rsB, csB, c.storage.As<float>(), cOff, n, false);
        }
        else if (a.DType == DType.Float64)
            Gemm.Dgemm(m, n, k, a.storage.As<double>(), aOff, rsA, csA, b.storage.As<double>(), bOff, rsB, csB, c.storage.As<double>(), cOff, n, false);
        else
        {
            // 16-bit floats: compute in float32 and round once.
            var af = Cast(new Tensor(a.storage, [a.storage.Length], [1], 0), DType.Float32);
            var bf = Cast(new Tensor(b.storage, [b.storage.Length], [1], 0), DType.Float32);
            var cf = new float[m * n];
            Gemm.Sgemm(m, n, k, af.storage.As<float>(), aOff, rsA, csA, bf.storage.As<float>(), bOff, rsB, csB, cf, 0, n, false);
            for (int i = 0; i < cf.Length; i++) WriteFromDouble(c.storage, cOff + i, cf[i]);
        }
    }
}
