using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Nabla.Interop.Onnx;

/// <summary>
/// Reading a model file without holding its weights three times. A plain load reads the whole file into one array, the
/// protobuf parser copies every tensor's data into a message of its own, and the importer copies that into the tensor:
/// for ResNet18.onnx (63 MB), on the bench machine, reading the file alone took about 250 ms. Here the file's message
/// structure is walked first, reading only field headers: the large data fields of the main graph's initializers
/// (<c>raw_data</c>, and packed <c>float_data</c> / <c>double_data</c> of FLOAT / DOUBLE tensors, which are the same
/// little-endian bytes) are left out of a stripped copy of the model message, their places in the file noted instead,
/// and the lengths of the messages around them rewritten. The stripped message (kilobytes) is parsed as usual, and
/// each payload is then read from the file straight into the array its tensor keeps.
/// </summary>
/// <remarks>
/// Anything outside the plain shape of a model message (a field of the deprecated group wire types, a graph given twice,
/// which protobuf would merge, a tensor with two data fields, a length past the end) makes <see cref="Split"/> return
/// null, and the caller parses the file whole as before, which also reports malformed files. So does a file with
/// nothing to detach. Subgraphs and node attributes keep their tensors inline; they are rarely large.
/// </remarks>
internal sealed class OnnxPayloads
{
    /// <summary>Smallest data field left in the file: below it a payload costs less to copy than to look up.</summary>
    internal const int MinBytes = 4096;

    /// <summary>Which field a detached payload came from: its bytes are the same, but errors name the field.</summary>
    internal enum Field { RawData, FloatData, DoubleData }

    /// <summary>One detached data field: where it lies in the model file, and which field it was.</summary>
    public readonly record struct Payload(SafeFileHandle File, long Offset, int Length, Field Field);

    /// <summary>The model message without the detached payloads.</summary>
    public byte[] Stripped { get; }

    /// <summary>Per initializer of the main graph, in order: where its data lies in the file, or null when inline.</summary>
    readonly List<(long Offset, int Length, Field Field)?> payloads;

    readonly SafeFileHandle file;

    OnnxPayloads(SafeFileHandle file, byte[] stripped, List<(long, int, Field)?> payloads)
    {
        this.file = file;
        Stripped = stripped;
        this.payloads = payloads;
    }

    /// <summary>The detached data of the main graph's initializer number <paramref name="index"/>, if any.</summary>
    public Payload? this[int index] => index < payloads.Count && payloads[index] is var (offset, length, field) ? new Payload(file, offset, length, field) : null;

    /// <summary>A piece of the stripped message: a range of the file, or bytes written here (a field's new header).</summary>
    sealed class Piece(long start, long end)
    {
        public long Start = start, End = end;
        public byte[]? Header;
        public long Size => Header?.Length ?? End - Start;
    }

    /// <summary>Splits the model message in <paramref name="file"/>, or returns null where it has a shape this does not
    /// handle or nothing to detach (see the remarks).</summary>
    public static OnnxPayloads? Split(FileStream file)
    {
        var reader = new Reader(file);
        var pieces = new List<Piece>();
        var payloads = new List<(long, int, Field)?>();
        bool graphSeen = false;
        while (!reader.AtEnd)
        {
            long start = reader.Position;
            if (!reader.Tag(out ulong tag)) return null;
            if (tag >> 3 == 7 && (tag & 7) == 2)
            {
                if (graphSeen || !reader.Length(out int length)) return null;
                graphSeen = true;
                var header = new Piece(0, 0) { Header = [] };   // filled in below; never joined to a range
                pieces.Add(header);
                long size = Graph(reader, reader.Position + length, pieces, payloads);
                if (size < 0) return null;
                header.Header = Header(tag, size);
            }
            else if (!reader.Skip(tag & 7)) return null;
            else Add(pieces, start, reader.Position);
        }
        if (!payloads.Any(p => p is not null)) return null;
        long total = pieces.Sum(p => p.Size);
        if (total > Array.MaxLength) return null;
        var stripped = new byte[total];
        int at = 0;
        foreach (var p in pieces)
        {
            if (p.Header is { } h) h.CopyTo(stripped, at);
            else
            {
                file.Seek(p.Start, SeekOrigin.Begin);
                file.ReadExactly(stripped, at, (int)p.Size);
            }
            at += (int)p.Size;
        }
        return new OnnxPayloads(file.SafeFileHandle, stripped, payloads);
    }

    /// <summary>A graph's fields up to <paramref name="end"/> as pieces; returns their total size, or −1.</summary>
    static long Graph(Reader reader, long end, List<Piece> pieces, List<(long, int, Field)?> payloads)
    {
        long size = 0;
        while (reader.Position < end)
        {
            long start = reader.Position;
            if (!reader.Tag(out ulong tag)) return -1;
            if (tag >> 3 == 5 && (tag & 7) == 2)
            {
                if (!reader.Length(out int length) || reader.Position + length > end) return -1;
                var header = new Piece(0, 0) { Header = [] };
                pieces.Add(header);
                long tensor = Tensor(reader, reader.Position + length, pieces, out var payload);
                if (tensor < 0) return -1;
                payloads.Add(payload);
                header.Header = Header(tag, tensor);
                size += header.Size + tensor;
            }
            else
            {
                if (!reader.Skip(tag & 7) || reader.Position > end) return -1;
                size += Add(pieces, start, reader.Position);
            }
        }
        return reader.Position == end ? size : -1;
    }

    /// <summary>A tensor's fields up to <paramref name="end"/> as pieces, without a large data field (its place goes to
    /// <paramref name="payload"/>); returns their total size, or −1.</summary>
    static long Tensor(Reader reader, long end, List<Piece> pieces, out (long, int, Field)? payload)
    {
        payload = null;
        long size = 0, dataType = -1;
        int dataFields = 0, typeFields = 0;
        while (reader.Position < end)
        {
            long start = reader.Position;
            if (!reader.Tag(out ulong tag)) return -1;
            ulong field = tag >> 3, wire = tag & 7;
            // The type and the data as protobuf would read them only where each is given once: data_type once (the last
            // one wins), one data field of raw_data, float_data or double_data in one piece (packed and unpacked values
            // of a repeated field join; a second raw_data wins). Other tensors take the whole-file parse.
            if (field == 2)
            {
                if (++typeFields > 1 || wire != 0 || !reader.Varint(out ulong t)) return -1;
                dataType = (long)t;
            }
            else if (field is 9 or 4 or 10 && ++dataFields > 1) return -1;
            else if (wire == 2 && field is 9 or 4 or 10)
            {
                if (!reader.Length(out int length) || reader.Position + length > end) return -1;
                Field? kind = field == 9 ? Field.RawData
                    : field == 4 && dataType == OnnxTypes.Float ? Field.FloatData
                    : field == 10 && dataType == OnnxTypes.Double ? Field.DoubleData : null;
                if (kind is { } k && length >= MinBytes)
                {
                    payload = (reader.Position, length, k);
                    reader.Seek(reader.Position + length);
                    continue;
                }
                reader.Seek(reader.Position + length);
            }
            else if (!reader.Skip(wire)) return -1;
            if (reader.Position > end) return -1;
            size += Add(pieces, start, reader.Position);
        }
        return reader.Position == end ? size : -1;
    }

    /// <summary>Adds the file range [start, end) to the pieces, joining it to the previous range where they touch.</summary>
    static long Add(List<Piece> pieces, long start, long end)
    {
        if (pieces.Count > 0 && pieces[^1] is { Header: null } last && last.End == start) last.End = end;
        else pieces.Add(new Piece(start, end));
        return end - start;
    }

    /// <summary>A field's tag and length as varints, written by the protobuf library the parse uses.</summary>
    static byte[] Header(ulong tag, long length)
    {
        var bytes = new byte[Google.Protobuf.CodedOutputStream.ComputeUInt64Size(tag) + Google.Protobuf.CodedOutputStream.ComputeUInt64Size((ulong)length)];
        var output = new Google.Protobuf.CodedOutputStream(bytes);
        output.WriteUInt64(tag);
        output.WriteUInt64((ulong)length);
        output.Flush();
        return bytes;
    }

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> of the file into a new array of
    /// <typeparamref name="T"/>: the payload's bytes land where the tensor will keep them.</summary>
    public static T[] Read<T>(SafeFileHandle file, long offset, int length, string where) where T : unmanaged
    {
        var a = GC.AllocateUninitializedArray<T>(length / System.Runtime.CompilerServices.Unsafe.SizeOf<T>());
        var bytes = MemoryMarshal.AsBytes(a.AsSpan());
        int done = 0;
        while (done < bytes.Length)
        {
            int n = RandomAccess.Read(file, bytes[done..], offset + done);
            if (n == 0) throw new ModelFormatException($"{where}: the file ended {bytes.Length - done} bytes before the tensor's data (changed while loading?)");
            done += n;
        }
        return a;
    }

    /// <summary>A forward reader over the file with a position, through the stream's own buffer.</summary>
    sealed class Reader(FileStream file)
    {
        readonly long length = file.Length;

        public long Position { get; private set; } = file.Position;
        public bool AtEnd => Position >= length;

        public void Seek(long to)
        {
            file.Seek(to, SeekOrigin.Begin);
            Position = to;
        }

        /// <summary>A field's tag: as protobuf reads it, at most 32 bits and a field number of at least 1 (a longer
        /// varint, which protobuf would cut to its low 32 bits, is refused, so the walk never sees a field the parser does not).</summary>
        public bool Tag(out ulong tag) => Varint(out tag) && tag <= uint.MaxValue && tag >> 3 != 0;

        public bool Varint(out ulong value)
        {
            value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                int b = file.ReadByte();
                if (b < 0) return false;
                Position++;
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return true;
            }
            return false;
        }

        public bool Length(out int value)
        {
            value = 0;
            if (!Varint(out ulong v) || v > (ulong)(length - Position) || v > int.MaxValue) return false;
            value = (int)v;
            return true;
        }

        /// <summary>Steps over one field's value of wire type <paramref name="wireType"/>.</summary>
        public bool Skip(ulong wireType)
        {
            long to;
            switch (wireType)
            {
                case 0: return Varint(out _);
                case 1: to = Position + 8; break;
                case 5: to = Position + 4; break;
                case 2:
                    if (!Length(out int n)) return false;
                    to = Position + n;
                    break;
                default: return false;
            }
            if (to > length) return false;
            Seek(to);
            return true;
        }
    }
}
