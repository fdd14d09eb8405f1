// Command citizen is a Go client of the gateway: one GetCitizen call over
// mutual TLS with a read mask. It prints the citizen as proto3 JSON, or the
// status and its google.rpc details when the gateway refuses.
//
//	citizen ADDR CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]
//
// Exit code: 0 on an answer, 1 on a gRPC error, 2 on a usage or file problem.
// See docs/clients.md (Go) for generating the packages it imports.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	citizenv1 "interop.gov.vn/gateway/genproto/interop/citizen/v1"
	commonv1 "interop.gov.vn/gateway/genproto/interop/common/v1"
)

func main() {
	if len(os.Args) < 6 {
		fmt.Fprintln(os.Stderr, "usage: citizen ADDR CA_PEM CERT_PEM KEY_PEM PERSONAL_ID [FIELD_PATH...]")
		os.Exit(2)
	}
	addr, caFile, certFile, keyFile, id := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fmt.Fprintln(os.Stderr, caFile+": no certificate")
		os.Exit(2)
	}
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := citizenv1.NewCitizenRegistryServiceClient(conn)
	resp, err := client.GetCitizen(ctx, &citizenv1.GetCitizenRequest{
		Context:    &commonv1.AccessContext{ProcedureCode: "1.004227", DossierId: "000.00.20.H13-241205-0001"},
		PersonalId: id,
		ReadMask:   &fieldmaskpb.FieldMask{Paths: os.Args[6:]},
	})
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("code=%s message=%s\n", st.Code(), st.Message())
		for _, d := range st.Details() {
			switch info := d.(type) {
			case *errdetails.ErrorInfo:
				fmt.Printf("ErrorInfo reason=%s domain=%s metadata=%v\n", info.Reason, info.Domain, info.Metadata)
			case *errdetails.BadRequest:
				for _, v := range info.FieldViolations {
					fmt.Printf("BadRequest field=%s description=%s\n", v.Field, v.Description)
				}
			case *errdetails.ResourceInfo:
				fmt.Printf("ResourceInfo type=%s name=%s\n", info.ResourceType, info.ResourceName)
			}
		}
		os.Exit(1)
	}
	fmt.Println(protojson.Format(resp.Citizen))
}
