// A Java client of the gateway, on grpc-java with Netty: one GetCitizen call
// over mutual TLS with a read mask. Prints the citizen as proto3 JSON, or the
// status and its google.rpc details (ErrorInfo, BadRequest, ResourceInfo)
// when the gateway refuses.
//
//   java CitizenClient HOST:PORT CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]
//
// Exit code: 0 on an answer, 1 on a gRPC error, 2 on a usage or file problem.
// See docs/clients.md (Java) for generating the classes it uses.

import com.google.protobuf.Any;
import com.google.protobuf.FieldMask;
import com.google.protobuf.util.JsonFormat;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.ResourceInfo;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.StatusProto;
import io.netty.handler.ssl.SslContext;
import java.io.File;
import java.util.Arrays;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import vn.gov.interop.citizen.v1.CitizenRegistryServiceGrpc;
import vn.gov.interop.citizen.v1.GetCitizenRequest;
import vn.gov.interop.citizen.v1.GetCitizenResponse;
import vn.gov.interop.common.v1.AccessContext;

public final class CitizenClient {
  public static void main(String[] args) throws Exception {
    if (args.length < 5) {
      System.err.println(
          "usage: CitizenClient HOST:PORT CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]");
      System.exit(2);
    }
    int colon = args[0].lastIndexOf(':');
    if (colon < 0) {
      System.err.println(args[0] + ": expected HOST:PORT");
      System.exit(2);
    }
    SslContext ssl;
    try {
      ssl = GrpcSslContexts.forClient()
          .trustManager(new File(args[1]))
          .keyManager(new File(args[2]), new File(args[3]))
          .build();
    } catch (Exception e) {
      System.err.println("cannot load the certificates: " + e);
      System.exit(2);
      return;
    }
    ManagedChannel channel = NettyChannelBuilder
        .forAddress(args[0].substring(0, colon), Integer.parseInt(args[0].substring(colon + 1)))
        .sslContext(ssl)
        .build();
    int exit = 0;
    try {
      GetCitizenResponse resp = CitizenRegistryServiceGrpc.newBlockingStub(channel)
          .withDeadlineAfter(10, TimeUnit.SECONDS)
          .getCitizen(GetCitizenRequest.newBuilder()
              .setContext(AccessContext.newBuilder()
                  .setProcedureCode("1.004227")
                  .setDossierId("000.00.20.H13-241205-0001"))
              .setPersonalId(args[4])
              .setReadMask(FieldMask.newBuilder()
                  .addAllPaths(Arrays.asList(args).subList(5, args.length)))
              .build());
      System.out.println(JsonFormat.printer().omittingInsignificantWhitespace()
          .print(resp.getCitizen()));
    } catch (StatusRuntimeException e) {
      exit = 1;
      System.out.println("code=" + e.getStatus().getCode() + " message=" + e.getStatus().getDescription());
      com.google.rpc.Status st = StatusProto.fromThrowable(e);
      for (Any d : st == null ? java.util.List.<Any>of() : st.getDetailsList()) {
        if (d.is(ErrorInfo.class)) {
          ErrorInfo info = d.unpack(ErrorInfo.class);
          System.out.println("ErrorInfo reason=" + info.getReason() + " domain=" + info.getDomain());
          new TreeMap<>(info.getMetadataMap()).forEach(
              (k, v) -> System.out.println("  metadata " + k + "=" + v));
        } else if (d.is(BadRequest.class)) {
          for (BadRequest.FieldViolation v : d.unpack(BadRequest.class).getFieldViolationsList()) {
            System.out.println("BadRequest field=" + v.getField() + " description=" + v.getDescription());
          }
        } else if (d.is(ResourceInfo.class)) {
          ResourceInfo r = d.unpack(ResourceInfo.class);
          System.out.println("ResourceInfo type=" + r.getResourceType() + " name=" + r.getResourceName());
        }
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(exit);
  }
}
