using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Nabla.Interop;

public static partial class PyTorchCheckpoint
{
    /// <summary>
    /// Writes <paramref name="tensors"/> as a torch.save zip checkpoint: an OrderedDict of name → tensor, each tensor
    /// contiguous on its own storage, records stored uncompressed under <c>archive/</c>, as PyTorch writes them.
    /// The archive loads with <c>torch.load</c> (PyTorch 1.6 and later).
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        var names = tensors.Keys.ToList();
        foreach (var (name, t) in tensors)
            if (t.DType is DType.UInt16 or DType.UInt32 or DType.UInt64)
                throw new DTypeException($"PyTorch checkpoint: tensor '{name}' is {t.DType.TorchName()}, which the torch 1.13 format this writer targets cannot hold (no storage class); convert it with To(DType.Int64) or save as safetensors");
        var pickle = new PickleWriter();
        pickle.Proto(2);
        pickle.Global("collections", "OrderedDict");
        pickle.EmptyTuple();
        pickle.Reduce();
        if (names.Count > 0)
        {
            pickle.Mark();
            for (int i = 0; i < names.Count; i++)
            {
                var t = tensors[names[i]];
                var shape = t.Shape;
                var stride = new long[shape.Length];
                long acc = 1;
                for (int d = shape.Length - 1; d >= 0; d--) { stride[d] = acc; acc *= shape[d]; }
                pickle.Unicode(names[i]);
                pickle.Global("torch._utils", "_rebuild_tensor_v2");
                pickle.Mark();
                // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
                pickle.Mark();
                pickle.Unicode("storage");
                pickle.Global("torch", StorageClassName(t.DType));
                pickle.Unicode(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
                pickle.Unicode("cpu");
                pickle.Int(t.NumElements);
                pickle.Tuple();
                pickle.BinPersId();
                pickle.Int(0); // storage_offset
                pickle.IntTuple(shape.Select(s => (long)s));
                pickle.IntTuple(stride);
                pickle.Bool(false); // requires_grad
                pickle.Global("collections", "OrderedDict");
                pickle.EmptyTuple();
                pickle.Reduce(); // backward_hooks
                pickle.Tuple();
                pickle.Reduce();
            }
            pickle.SetItems();
        }
        pickle.Stop();

        var tmp = path + ".tmp-" + Environment.ProcessId;
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
            using (var zip = new ZipArchive(fs, ZipArchiveMode.Create, leaveOpen: false, entryNameEncoding: Encoding.UTF8))
            {
                Write(zip, "archive/data.pkl", pickle.ToArray());
                Write(zip, "archive/byteorder", "little"u8.ToArray());
                for (int i = 0; i < names.Count; i++)
                    Write(zip, $"archive/data/{i}", tensors[names[i]].ToBytes());
                Write(zip, "archive/version", "3\n"u8.ToArray());
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    static void Write(ZipArchive zip, string name, byte[] bytes)
    {
        var e = zip.CreateEntry(name, CompressionLevel.NoCompression);
        e.LastWriteTime = new DateTimeOffset(1980, 1, 1, 0, 0, 0, TimeSpan.Zero);
        using var s = e.Open();
        s.Write(bytes);
    }

    static string StorageClassName(DType t) => t switch
    {
        DType.Float32 => "FloatStorage",
        DType.Float64 => "DoubleStorage",
        DType.Float16 => "HalfStorage",
        DType.BFloat16 => "BFloat16Storage",
        DType.Int64 => "LongStorage",
        DType.Int32 => "IntStorage",
        DType.Int8 => "CharStorage",
        DType.UInt8 => "ByteStorage",
        DType.Bool => "BoolStorage",
        DType.Int16 => "ShortStorage",
        _ => throw new DTypeException($"dtype {t} has no PyTorch storage class"),
    };

    /// <summary>Emits pickle opcodes (protocol 2 subset).</summary>
    sealed class PickleWriter
    {
        readonly MemoryStream ms = new();

        void Op(byte b) => ms.WriteByte(b);
        public void Proto(byte v) { Op(0x80); Op(v); }
        public void Stop() => Op((byte)'.');
        public void Mark() => Op((byte)'(');
        public void Tuple() => Op((byte)'t');
        public void EmptyTuple() => Op((byte)')');
        public void Reduce() => Op((byte)'R');
        public void SetItems() => Op((byte)'u');
        public void BinPersId() => Op((byte)'Q');
        public void Bool(bool b) => Op(b ? (byte)0x88 : (byte)0x89);

        public void Global(string module, string name)
        {
            Op((byte)'c');
            ms.Write(Encoding.ASCII.GetBytes(module + "\n" + name + "\n"));
        }

        public void Unicode(string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            Op((byte)'X');
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)b.Length);
            ms.Write(len);
            ms.Write(b);
        }

        public void Int(long v)
        {
            if (v is >= 0 and < 256) { Op((byte)'K'); Op((byte)v); return; }
            if (v is >= int.MinValue and <= int.MaxValue)
            {
                Op((byte)'J');
                Span<byte> b = stackalloc byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(b, (int)v);
                ms.Write(b);
                return;
            }
            Op(0x8A);
            Op(8);
            Span<byte> l = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(l, v);
            ms.Write(l);
        }

        public void IntTuple(IEnumerable<long> values)
        {
            var list = values.ToList();
            if (list.Count == 0) { EmptyTuple(); return; }
            Mark();
            foreach (var v in list) Int(v);
            Tuple();
        }

        public byte[] ToArray() => ms.ToArray();
    }
}
