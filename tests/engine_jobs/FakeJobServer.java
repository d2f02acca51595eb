// Stands in for Beam's job-server jar in tests/test_engines.py (Maven Central does not serve the real one
// here): writes the JVM flags and the arguments that Beam started it with, one per line, to the file that
// TOONBEAM_FAKE_JOB_SERVER_OUT names, then exits with status 3, as a job server that failed to start.
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public class FakeJobServer {
  public static void main(String[] args) throws Exception {
    List<String> lines = new ArrayList<>(ManagementFactory.getRuntimeMXBean().getInputArguments());
    lines.add("--");
    lines.addAll(Arrays.asList(args));
    Files.write(Paths.get(System.getenv("TOONBEAM_FAKE_JOB_SERVER_OUT")), lines);
    System.exit(3);
  }
}
