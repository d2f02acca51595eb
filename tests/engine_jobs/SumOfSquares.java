// A small batch job for the local Flink cluster's tests (tests/test_engines.py): the sum of the squares of
// 1..N, computed on the TaskManager's slots (one sum comes back to the client), printed as "RESULT <sum>".
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.CloseableIterator;

public class SumOfSquares {
  public static void main(String[] args) throws Exception {
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setRuntimeMode(RuntimeExecutionMode.BATCH);
    long n = Long.parseLong(args[0]);
    long sum = 0;
    try (CloseableIterator<Long> squares =
        env.fromSequence(1, n).map(x -> x * x).returns(Types.LONG)
            .keyBy(x -> 0, Types.INT).reduce((a, b) -> a + b).executeAndCollect("toonbeam-check")) {
      while (squares.hasNext()) {
        sum += squares.next();
      }
    }
    System.out.println("RESULT " + sum);
  }
}
