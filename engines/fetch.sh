#!/usr/bin/env bash
# Downloads the pinned artifacts of engines/artifacts.lock once into one cache folder (ENGINES_DIR,
# default .engines/), checks each file's sha256 against the pin, and unpacks FLINK_HOME and SPARK_HOME:
#   .engines/flink-1.20.3   bin/ conf/ from the apache-flink wheel, lib/ opt/ plugins/ bin/bash-java-utils.jar
#                           from the apache-flink-libraries sdist (neither pip-installs beside apache-beam 2.77)
#   .engines/spark-3.5.8    the pyspark sdist's deps/ (bin/spark-class, jars/, sbin/) and lib/ as python/lib/
#   .engines/jars/          Beam's job-server jars, when Maven Central serves them
# Nothing downloads at run time: pipeline/engines.py only reads this folder. A second run downloads nothing.
# Exit status: 1 when a PyPI artifact is missing or a hash differs; a job-server jar that Maven does not
# serve is one line on stderr (the clusters still work; Beam jobs on them need the jar).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=${ENGINES_LOCK:-engines/artifacts.lock}
DIR=${ENGINES_DIR:-.engines}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR/dl" "$DIR/jars"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE PIN: the file's hash is the pinned one (a "-" pin is refused, naming the hash to pin)
check() {
  local file=$1 pin=$2 got
  got=$(sha "$file")
  if [ "$pin" = "-" ]; then
    echo "engines: $file has no pinned hash; after checking it, pin it in $LOCK: $got" >&2
    return 1
  fi
  if [ "$got" != "$pin" ]; then
    echo "engines: $file: sha256 $got, but $LOCK pins $pin" >&2
    rm -f "$file"
    return 1
  fi
}

missing_jars=0
while IFS=$'\t' read -r kind coord file pin; do
  case "$kind" in ''|'#'*) continue ;; esac
  case "$kind" in
    pypi)
      [ -f "$DIR/dl/$file" ] || "$PYTHON" -m pip download --quiet --no-deps --no-build-isolation -d "$DIR/dl" "$coord"
      [ -f "$DIR/dl/$file" ] || { echo "engines: pip download $coord gave no $file" >&2; exit 1; }
      check "$DIR/dl/$file" "$pin"
      ;;
    maven)
      if [ ! -f "$DIR/jars/$file" ]; then
        IFS=: read -r group artifact version <<<"$coord"
        if mvn -q dependency:get -Dartifact="$coord" -Dtransitive=false >"$DIR/mvn.log" 2>&1; then
          cp "$HOME/.m2/repository/${group//.//}/$artifact/$version/$file" "$DIR/jars/$file"
        else
          echo "engines: Maven Central does not serve $coord: Beam jobs on that engine cannot run here" >&2
          missing_jars=$((missing_jars + 1))
          continue
        fi
      fi
      check "$DIR/jars/$file" "$pin"
      ;;
  esac
done <"$LOCK"

# FLINK_HOME: one folder from the wheel (scripts, conf) and the libraries sdist (jars)
FLINK_HOME=$DIR/flink-1.20.3
if [ ! -f "$FLINK_HOME/.complete" ]; then
  rm -rf "$FLINK_HOME" "$DIR/tmp" && mkdir -p "$FLINK_HOME" "$DIR/tmp"
  tar xzf "$DIR/dl/apache-flink-libraries-1.20.3.tar.gz" -C "$FLINK_HOME" --strip-components=2 apache-flink-libraries-1.20.3/deps
  "$PYTHON" -m zipfile -e "$DIR"/dl/apache_flink-1.20.3-*.whl "$DIR/tmp"
  cp -r "$DIR/tmp/pyflink/bin/." "$FLINK_HOME/bin/"
  cp -r "$DIR/tmp/pyflink/conf" "$FLINK_HOME/conf"
  chmod +x "$FLINK_HOME"/bin/*.sh "$FLINK_HOME/bin/flink"
  rm -rf "$DIR/tmp"
  touch "$FLINK_HOME/.complete"
fi

SPARK_HOME=$DIR/spark-3.5.8
if [ ! -f "$SPARK_HOME/.complete" ]; then
  rm -rf "$SPARK_HOME" && mkdir -p "$SPARK_HOME"
  tar xzf "$DIR/dl/pyspark-3.5.8.tar.gz" -C "$SPARK_HOME" --strip-components=2 pyspark-3.5.8/deps
  # python/lib/: where spark-submit finds PySpark for a Python job's driver and executors
  mkdir -p "$SPARK_HOME/python"
  tar xzf "$DIR/dl/pyspark-3.5.8.tar.gz" -C "$SPARK_HOME/python" --strip-components=1 pyspark-3.5.8/lib
  touch "$SPARK_HOME/.complete"
fi
echo "engines: FLINK_HOME=$FLINK_HOME SPARK_HOME=$SPARK_HOME; job-server jars missing: $missing_jars"
